"""WPS process ``classify_scene``: classify a scene into a GeoTIFF."""

import geoml_hub.wps.ogc.operations as operations
import geoml_hub.wps.ogc.wpsio as wpsio
from geoml_hub.wps.ogc.process import FORMATS, GeomlProcess


class ClassifyScene(GeomlProcess):
    identifier = "classify_scene"
    param_class = operations.ClassifyParams
    kubernetes = True
    fan_out = "scene"
    chain = {"model": (("train_model", "model"),),
             "scene": (("extract_samples", "scene"), ("map", "scene"))}

    def __init__(self):
        inputs = [
            wpsio.model_input(),
            wpsio.scene_input("Its bands must be those of the training samples unless band_map says which to use."),
            *wpsio.param_inputs(operations.ClassifyParams),
            wpsio.literal_input("confidence", "Confidence raster", "boolean",
                                "Also write the confidence raster: the probability of the predicted class per pixel "
                                "(float32, 0 to 1, nodata -1), where the model is unsure.", default=True),
        ]
        outputs = [
            wpsio.file_output("classification", "Classification", FORMATS.GEOTIFF,
                              "Single-band uint8 GeoTIFF on the scene's grid: class codes, 255 = nodata, colour "
                              "table, class names in the CLASS_NAMES tag. Input of validate_classification and "
                              "compare_classifications as jobs/JOB_ID/classification.tif."),
            wpsio.file_output("confidence", "Confidence", FORMATS.GEOTIFF,
                              "Float32 GeoTIFF on the scene's grid: probability of the predicted class, 0 to 1, "
                              "-1 = nodata (when the confidence input is true). Input of validate_classification "
                              "(accuracy per confidence bin)."),
            wpsio.literal_output("compatible", "Compatibility verdict", "string",
                                 "compatible, not compatible or not checked: whether the model is fit for the "
                                 "scene (the spectral compatibility check that runs first)."),
            wpsio.file_output("compatibility", "Compatibility check", FORMATS.JSON,
                              "The compatibility check's summary: verdict, reason, per-band figures."),
            wpsio.file_output("class_counts", "Pixels per class", FORMATS.JSON, "Class name to classified pixels."),
            wpsio.literal_output("pixels", "Pixels", "integer", "Pixels of the scene.", uom="pixels"),
            wpsio.literal_output("nodata_pixels", "Nodata pixels", "integer",
                                 "Pixels left unclassified (255) because an input band is nodata.", uom="pixels"),
            wpsio.literal_output("stride", "Stride", "integer", "Block size used (1 for pixel models).",
                                 uom="pixels"),
        ]
        super().__init__(
            self._handler, title="Classify a scene",
            abstract="Applies a trained model to a scene window by window: pixel models predict every pixel, patch "
                     "models give each stride x stride block the class of the patch centred on it. Writes a tiled, "
                     "compressed uint8 classification GeoTIFF with a colour table, and the per-pixel confidence. A "
                     "spectral compatibility check runs first and says whether the model is fit for the scene (the "
                     "classification runs either way). Progress is reported per window.",
            keywords=["classification", "inference", "land cover", "GeoTIFF"],
            inputs=inputs, outputs=outputs, datasets={"model": "file", "scene": "file"})

    def _handler(self, request, response):
        result = operations.classify_scene(self.job, self.dataset(request, "model"), self.datasets_of(request, "scene"),
                                           confidence=self.value(request, "confidence", True),
                                           progress=self.progress(response), **self.param_values(request))
        self.set_outputs(response, result)
        return response
