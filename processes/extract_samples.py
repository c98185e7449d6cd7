"""WPS process ``extract_samples``: training samples from the labelled pixels of a scene."""

import geoml_hub.wps.ogc.operations as operations
import geoml_hub.wps.ogc.wpsio as wpsio
from geoml_hub.wps.ogc.process import FORMATS, GeomlProcess


class ExtractSamples(GeomlProcess):
    identifier = "extract_samples"
    chain = {"scene": (("map", "scene"),), "reference": (("map", "samples"),)}

    def __init__(self):
        inputs = [
            wpsio.scene_input(),
            wpsio.dataset_input("reference", "Reference labels",
                                "Label raster on the scene's grid (integer class codes), e.g. "
                                "data/landsat7_chiapas/training_data.gtif; or training polygons, a GeoJSON "
                                "FeatureCollection (.geojson, longitude/latitude) whose features carry a 'class' "
                                "property (and optionally an integer 'code'), as the web map saves them: they are "
                                "burnt into labels on the scene's grid (pixel centres inside a polygon)."),
            wpsio.literal_input("patch_size", "Patch size", "integer",
                                "Edge of the window cut around each labelled pixel, an odd number of pixels; 1 gives "
                                "pixel samples (for a per-pixel classifier).", default=1, minimum=1, maximum=63,
                                spacing=2, uom="pixels"),
            wpsio.reference_nodata_input(),
            wpsio.literal_input("class_names", "Class names", "string",
                                "Names of the label codes, CODE=NAME pairs separated by commas, e.g. "
                                "1=forest,2=water. They name the class directories; default: the codes.",
                                min_occurs=0),
            wpsio.literal_input("test_fraction", "Test fraction", "float",
                                "Share of each class's labelled pixels held out for testing, by whole regions "
                                "(connected groups of same-class pixels, never single pixels; the largest region of "
                                "a class always trains and a class with one region is not tested). 0: no split. "
                                "With a split the samples come from the training regions only and the held-out "
                                "labels are returned as reference_test for validate_classification.",
                                default=0.0, minimum=0.0, maximum=0.9),
            wpsio.seed_input("the spatial split"),
            wpsio.ignore_crs_input(),
        ]
        outputs = [
            wpsio.literal_output("samples", "Training-sample tree", "string",
                                 "Dataset name of the tree written (jobs/JOB_ID/samples): one directory per class, "
                                 "one .npy container per region, classes.json and regions.csv. Input of "
                                 "balance_samples and train_model."),
            wpsio.literal_output("sample_count", "Samples", "integer", "Samples extracted (all classes)."),
            wpsio.literal_output("n_classes", "Classes", "integer", "Classes with samples."),
            wpsio.literal_output("n_regions", "Regions", "integer", "Labelled regions the samples come from."),
            wpsio.literal_output("skipped_nodata", "Skipped pixels", "integer",
                                 "Labelled pixels left out because the scene is nodata there."),
            wpsio.literal_output("test_regions", "Test regions", "integer",
                                 "Regions held out for testing (0 without a split)."),
            wpsio.literal_output("reference_train", "Training reference", "string",
                                 "Dataset name of the training side of the split (jobs/JOB_ID/reference_train.tif); "
                                 "only with test_fraction above 0."),
            wpsio.literal_output("reference_test", "Test reference", "string",
                                 "Dataset name of the held-out labels (jobs/JOB_ID/reference_test.tif), the reference "
                                 "for validate_classification; only with test_fraction above 0."),
            wpsio.literal_output("reference_labels", "Labels of the polygons", "string",
                                 "Dataset name of the label raster burnt from GeoJSON polygons "
                                 "(jobs/JOB_ID/reference_polygons.tif); only when reference is GeoJSON."),
            wpsio.file_output("class_counts", "Samples per class", FORMATS.JSON, "Class name to number of samples."),
            wpsio.file_output("regions", "Regions", FORMATS.CSV,
                              "One row per extracted region: code, class, pixels, samples, file, bounding box."),
            wpsio.file_output("split_regions", "Spatial split", FORMATS.CSV,
                              "One row per region of the reference with its side (train or test); only with "
                              "test_fraction above 0."),
        ]
        super().__init__(
            self._handler, title="Extract training samples from a scene",
            abstract="Cuts a window (patch_size x patch_size pixels) of the scene around every labelled pixel of a "
                     "reference raster and writes a training-sample tree: one directory per class, one .npy "
                     "container per connected region of same-class pixels. Optionally first splits the reference "
                     "spatially, by whole regions as iota2 does, into training and test labels, so that the test "
                     "pixels never share a region with a training pixel.",
            keywords=["training samples", "extraction", "spatial split", "reference", "labels"],
            inputs=inputs, outputs=outputs, datasets={"scene": "file", "reference": "file"})

    def check(self, wps_request):
        operations.parse_class_names(self.value(wps_request, "class_names"))

    def _handler(self, request, response):
        result = operations.extract_samples(
            self.job, self.datasets_of(request, "scene"), self.dataset(request, "reference"),
            patch_size=self.value(request, "patch_size", 1),
            reference_nodata=self.value(request, "reference_nodata", 0.0),
            class_names=self.value(request, "class_names"),
            test_fraction=self.value(request, "test_fraction", 0.0),
            seed=self.value(request, "seed", 0),
            ignore_crs_name=self.value(request, "ignore_crs_name", False),
            progress=self.progress(response))
        self.set_outputs(response, result)
        wpsio.drop_unset_outputs(request, response, result)
        return response
