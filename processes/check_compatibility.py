"""WPS process ``check_compatibility``: is a model fit for a scene (or a sample tree)?"""

import geoml_hub.wps.ogc.operations as operations
import geoml_hub.wps.ogc.wpsio as wpsio
from geoml_hub.wps.ogc.process import FORMATS, GeomlProcess


class CheckCompatibility(GeomlProcess):
    identifier = "check_compatibility"
    param_class = operations.CompatibilityParams
    kubernetes = True
    chain = {"model": (("train_model", "model"),),
             "scene": (("extract_samples", "scene"), ("map", "scene"))}

    def __init__(self):
        inputs = [
            wpsio.model_input(),
            wpsio.dataset_input("scene", "Scene",
                                "The scene to check: one multi-band GeoTIFF, or several GeoTIFFs on one grid (repeat "
                                f"the input, at most {wpsio.MAX_SCENE_FILES}), e.g. "
                                "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif. Give scene or samples.",
                                min_occurs=0, max_occurs=wpsio.MAX_SCENE_FILES),
            wpsio.dataset_input("samples", "Training samples",
                                "Instead of a scene: a training-sample tree (directory) or manifest.csv, e.g. "
                                "data/eurosat_ms.", min_occurs=0),
            *wpsio.param_inputs(operations.CompatibilityParams),
        ]
        outputs = [
            wpsio.literal_output("compatible", "Verdict", "string",
                                 "compatible or not compatible: whether the model is fit for the input."),
            wpsio.literal_output("reason", "Reason", "string",
                                 "The verdict in words, e.g. 'not compatible: band 2: 96 % of pixels outside the "
                                 "training range'."),
            wpsio.file_output("summary", "Compatibility summary", FORMATS.JSON,
                              "compatible, reason, per-band figures (mean shift in training standard deviations, "
                              "share outside the training 1-99 % range, Wasserstein distance), low-confidence share."),
            wpsio.file_output("figure", "Distributions", wpsio.PNG_FORMAT,
                              "Per band: the training and the input cumulative distributions."),
        ]
        super().__init__(
            self._handler, title="Check a model's compatibility with a scene",
            abstract="Compares a scene (or a sample tree) with the model's training data band by band: standardised "
                     "mean shift, share of pixels outside the training range, distribution distance and share of "
                     "low-confidence predictions, and says plainly whether the model is fit for it (e.g. a "
                     "Sentinel-2 model on a Landsat scene is not). The scene is streamed window by window.",
            keywords=["compatibility", "dataset shift", "quality control", "spectral"],
            inputs=inputs, outputs=outputs, datasets={"model": "file", "scene": "file", "samples": "any"})

    def _handler(self, request, response):
        result = operations.check_compatibility(
            self.job, self.dataset(request, "model"), self.datasets_of(request, "scene"),
            self.dataset(request, "samples"), roots=self.allowed_roots(), progress=self.progress(response),
            **self.param_values(request))
        self.set_outputs(response, result)
        return response
