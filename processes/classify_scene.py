"""WPS process ``classify_scene``: classify a scene into a GeoTIFF."""

from geoml_hub.wps import tasks
from geoml_hub.wps import wpsio
from geoml_hub.wps.process import FORMATS, GeomlProcess


class ClassifyScene(GeomlProcess):
    def __init__(self):
        inputs = [
            wpsio.model_input(),
            wpsio.scene_input("Its bands must be those of the training samples unless band_map says which to use."),
            wpsio.literal_input("stride", "Stride", "integer",
                                "Patch models: edge of the blocks that each take the class of the patch centred on "
                                "them. Default: half the patch size. Ignored by pixel models, which classify every "
                                "pixel.", minimum=1, maximum=4096, min_occurs=0, uom="pixels"),
            wpsio.literal_input("band_map", "Band map", "string",
                                "Scene band (1-based) for each band the model reads, comma-separated, e.g. 2,3,4; "
                                "needed when the scene's bands differ from the training samples'.", min_occurs=0),
            wpsio.literal_input("tile_size", "Tile size", "integer",
                                "Edge of the windows the scene is read and classified in; memory is bounded by one "
                                "window whatever the scene size.", default=512, minimum=64, maximum=4096,
                                uom="pixels"),
            wpsio.device_input(),
            wpsio.tta_input(),
        ]
        outputs = [
            wpsio.file_output("classification", "Classification", FORMATS.GEOTIFF,
                              "Single-band uint8 GeoTIFF on the scene's grid: class codes, 255 = nodata, colour "
                              "table, class names in the CLASS_NAMES tag. Input of validate_classification and "
                              "compare_classifications as jobs/JOB_ID/classification.tif."),
            wpsio.file_output("class_counts", "Pixels per class", FORMATS.JSON, "Class name to classified pixels."),
            wpsio.literal_output("pixels", "Pixels", "integer", "Pixels of the scene.", uom="pixels"),
            wpsio.literal_output("nodata_pixels", "Nodata pixels", "integer",
                                 "Pixels left unclassified (255) because an input band is nodata.", uom="pixels"),
            wpsio.literal_output("stride", "Stride", "integer", "Block size used (1 for pixel models).",
                                 uom="pixels"),
        ]
        super().__init__(
            self._handler, identifier="classify_scene", title="Classify a scene",
            abstract="Applies a trained model to a scene window by window: pixel models predict every pixel, patch "
                     "models give each stride x stride block the class of the patch centred on it. Writes a tiled, "
                     "compressed uint8 classification GeoTIFF with a colour table. Progress is reported per window.",
            keywords=["classification", "inference", "land cover", "GeoTIFF"],
            inputs=inputs, outputs=outputs, datasets={"model": "file", "scene": "file"})

    def check(self, wps_request):
        tasks.parse_int_list(self.value(wps_request, "band_map"), "band_map")

    def _handler(self, request, response):
        result = tasks.classify_scene(
            self.job, self.dataset(request, "model"), self.datasets_of(request, "scene"),
            stride=self.value(request, "stride"), band_map=self.value(request, "band_map"),
            tile_size=self.value(request, "tile_size", 512), device=self.value(request, "device", "auto"),
            tta=self.value(request, "tta", False), progress=self.progress(response))
        self.set_outputs(response, result)
        return response
