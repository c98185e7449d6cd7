"""WPS process ``validate_classification``: PyCM quality control of a classified scene."""

import geoml_hub.wps.ogc.wpsio as wpsio
import geoml_hub.wps.ogc.operations as operations
from geoml_hub.wps.ogc.process import GeomlProcess


class ValidateClassification(GeomlProcess):
    identifier = "validate_classification"
    qc = True
    fan_out = "classification"
    chain = {"classification": (("classify_scene", "classification"),),
             "confidence": (("classify_scene", "confidence"),),
             "reference": (("extract_samples", "reference_test"), ("extract_samples", "reference_labels"),
                           ("extract_samples", "reference"))}

    def __init__(self):
        inputs = [
            wpsio.dataset_input("classification", "Classification",
                                "Single-band classification GeoTIFF (class codes), e.g. the output of classify_scene: "
                                "jobs/JOB_ID/classification.tif."),
            wpsio.dataset_input("reference", "Reference labels",
                                "Reference (ground truth) label raster on the same grid, e.g. "
                                "data/landsat7_chiapas/training_data.gtif."),
            wpsio.literal_input("reference_nodata", "Reference nodata", "float",
                                "Value of unlabelled reference pixels; they are left out.", default=0.0),
            wpsio.literal_input("ignore_crs_name", "Ignore CRS name", "boolean",
                                "Accept CRSs that differ only in name (e.g. the same EPSG code).", default=False),
            wpsio.dataset_input("confidence", "Confidence raster",
                                "Optional: the classification's confidence raster (classify_scene's confidence "
                                "output, jobs/JOB_ID/confidence.tif); adds the accuracy per confidence bin.",
                                min_occurs=0),
        ]
        outputs = wpsio.qc_outputs() + [
            wpsio.file_output("reliability", "Accuracy by confidence", wpsio.PNG_FORMAT,
                              "Reliability diagram: accuracy of the labelled pixels per confidence bin (with a "
                              "confidence input; the table is in the summary's confidence_bins)."),
        ]
        super().__init__(
            self._handler, title="Validate a classification",
            abstract="PyCM quality control of a classification against labelled reference pixels: overall accuracy, "
                     "kappa, PPV (user's accuracy) and TPR (producer's accuracy) per class, confusion-matrix heatmap "
                     "and PyCM's HTML report.",
            keywords=["quality control", "PyCM", "confusion matrix", "accuracy"],
            inputs=inputs, outputs=outputs, datasets={"classification": "file", "reference": "file", "confidence": "file"})

    def _handler(self, request, response):
        result = operations.validate_classification(
            self.job, self.dataset(request, "classification"), self.dataset(request, "reference"),
            reference_nodata=self.value(request, "reference_nodata", 0.0),
            ignore_crs_name=self.value(request, "ignore_crs_name", False),
            confidence=self.dataset(request, "confidence"), progress=self.progress(response))
        self.set_outputs(response, result)
        return response
