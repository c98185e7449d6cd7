"""WPS process ``compare_classifications``: two classifications against one reference."""

import geoml_hub.wps.ogc.operations as operations
import geoml_hub.wps.ogc.wpsio as wpsio
from geoml_hub.wps.ogc.process import FORMATS, GeomlProcess


def _side_outputs(suffix: str, which: str):
    return [
        wpsio.literal_output(f"overall_accuracy_{suffix}", f"Overall accuracy of {which}", "float",
                             "Share of correctly classified labelled pixels, 0 to 1."),
        wpsio.literal_output(f"kappa_{suffix}", f"Kappa of {which}", "float", "Cohen's kappa."),
        wpsio.file_output(f"summary_{suffix}", f"QC summary of {which}", FORMATS.JSON,
                          "overall_accuracy, kappa, ppv, tpr, f1 per class, counts."),
        wpsio.file_output(f"report_{suffix}", f"PyCM report of {which}", wpsio.HTML_FORMAT),
        wpsio.file_output(f"matrix_{suffix}", f"Confusion matrix of {which}", FORMATS.CSV,
                          "Rows: reference; columns: predicted."),
        wpsio.file_output(f"heatmap_{suffix}", f"Confusion-matrix heatmap of {which}", wpsio.PNG_FORMAT),
        wpsio.file_output(f"pycm_object_{suffix}", f"PyCM confusion matrix of {which}", wpsio.PYCM_FORMAT,
                          wpsio.PYCM_ABSTRACT),
    ]


class CompareClassifications(GeomlProcess):
    identifier = "compare_classifications"
    chain = {"classification_a": (("classify_scene", "classification"),),
             "reference": (("extract_samples", "reference_test"), ("extract_samples", "reference_labels"),
                           ("extract_samples", "reference"))}

    def __init__(self):
        inputs = [
            wpsio.dataset_input("classification_a", "Classification A",
                                "First classification GeoTIFF, e.g. jobs/JOB_ID/classification.tif."),
            wpsio.dataset_input("classification_b", "Classification B",
                                "Second classification GeoTIFF on the same grid."),
            wpsio.dataset_input("reference", "Reference labels",
                                "Reference (ground truth) label raster on the same grid, e.g. the reference_test "
                                "output of extract_samples."),
            wpsio.literal_input("name_a", "Name of A", "string",
                                "Name of the first version in the tables: 1 to 40 letters, digits, spaces or _ . + -.",
                                default="A"),
            wpsio.literal_input("name_b", "Name of B", "string", "Name of the second version (must differ).",
                                default="B"),
            wpsio.reference_nodata_input(),
            wpsio.ignore_crs_input(),
        ]
        outputs = [
            wpsio.literal_output("better", "Better version", "string",
                                 "name_a or name_b: higher overall accuracy, ties broken by kappa; tie when equal."),
            wpsio.literal_output("pycm_best", "PyCM verdict", "string",
                                 "The better version by PyCM Compare, or none when it reaches no verdict."),
            wpsio.file_output("summary", "Comparison summary", FORMATS.JSON,
                              "Names, the better one, the rule, PyCM's verdict and the side-by-side table."),
            wpsio.file_output("comparison", "Comparison table", FORMATS.CSV,
                              "Overall accuracy, kappa, macro PPV and per-class PPV and TPR of both versions."),
        ] + _side_outputs("a", "A") + _side_outputs("b", "B")
        super().__init__(
            self._handler, title="Compare two classifications",
            abstract="Validates two classifications (two versions of a method) against one reference with PyCM, as "
                     "in the quality-control algorithm of the ISDCT SB RAS geoportal paper, and names the better "
                     "one: higher overall accuracy, ties broken by kappa. Returns a side-by-side table and each "
                     "version's report and confusion-matrix heatmap.",
            keywords=["quality control", "comparison", "PyCM", "accuracy", "kappa"],
            inputs=inputs, outputs=outputs,
            datasets={"classification_a": "file", "classification_b": "file", "reference": "file"})

    def check(self, wps_request):
        operations.check_version_names(self.value(wps_request, "name_a", "A"), self.value(wps_request, "name_b", "B"))

    def _handler(self, request, response):
        result = operations.compare_classifications(
            self.job, self.dataset(request, "classification_a"), self.dataset(request, "classification_b"),
            self.dataset(request, "reference"),
            name_a=self.value(request, "name_a", "A"), name_b=self.value(request, "name_b", "B"),
            reference_nodata=self.value(request, "reference_nodata", 0.0),
            ignore_crs_name=self.value(request, "ignore_crs_name", False),
            progress=self.progress(response))
        self.set_outputs(response, result)
        return response
