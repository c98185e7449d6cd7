"""WPS process ``evaluate_model``: patch-level quality control of a model."""

import geoml_hub.wps.ogc.operations as operations
import geoml_hub.wps.ogc.wpsio as wpsio
from geoml_hub.wps.ogc.process import FORMATS, GeomlProcess


class EvaluateModel(GeomlProcess):
    identifier = "evaluate_model"
    param_class = operations.EvaluateParams
    kubernetes = True
    qc = True
    chain = {"model": (("train_model", "model"),)}

    def __init__(self):
        inputs = [
            wpsio.model_input(),
            wpsio.samples_input("Their class directories (or manifest classes) are the reference labels; the bands "
                                "and patch size must be those the model was trained on."),
            *wpsio.param_inputs(operations.EvaluateParams),
        ]
        outputs = wpsio.qc_outputs() + [
            wpsio.file_output("predictions", "Predictions", FORMATS.CSV,
                              "One row per sample: file, index, reference, predicted class and code, probability."),
        ]
        super().__init__(
            self._handler, title="Evaluate a model on labelled samples",
            abstract="Predicts every sample of a training-sample tree or manifest with a trained model and compares "
                     "the predictions with the samples' classes using PyCM (quality-control algorithm of the ISDCT "
                     "SB RAS geoportal paper): overall accuracy, kappa, PPV and TPR per class, confusion-matrix "
                     "heatmap and PyCM's HTML report.",
            keywords=["quality control", "evaluation", "PyCM", "confusion matrix", "accuracy"],
            inputs=inputs, outputs=outputs, datasets={"model": "file", "samples": "any"})

    def _handler(self, request, response):
        result = operations.evaluate_model(
            self.job, self.dataset(request, "model"), self.dataset(request, "samples"),
            roots=self.allowed_roots(), progress=self.progress(response), **self.param_values(request))
        self.set_outputs(response, result)
        return response
