"""WPS process ``validate_classification``: PyCM quality control of a classified scene."""

import geoml_hub.wps.ogc.wpsio as wpsio
import geoml_hub.wps.ogc.operations as operations
from geoml_hub.wps.ogc.process import GeomlProcess


class ValidateClassification(GeomlProcess):
    identifier = "validate_classification"
    qc = True
    fan_out = "classification"
    chain = {"classification": (("classify_scene", "classification"),),
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
        ]
        outputs = wpsio.qc_outputs()
        super().__init__(
            self._handler, title="Validate a classification",
            abstract="PyCM quality control of a classification against labelled reference pixels: overall accuracy, "
                     "kappa, PPV (user's accuracy) and TPR (producer's accuracy) per class, confusion-matrix heatmap "
                     "and PyCM's HTML report.",
            keywords=["quality control", "PyCM", "confusion matrix", "accuracy"],
            inputs=inputs, outputs=outputs, datasets={"classification": "file", "reference": "file"})

    def _handler(self, request, response):
        result = operations.validate_classification(
            self.job, self.dataset(request, "classification"), self.dataset(request, "reference"),
            reference_nodata=self.value(request, "reference_nodata", 0.0),
            ignore_crs_name=self.value(request, "ignore_crs_name", False),
            progress=self.progress(response))
        self.set_outputs(response, result)
        return response
