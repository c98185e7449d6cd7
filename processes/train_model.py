"""WPS process ``train_model``: train a classifier (random forest, boosted trees, their ensemble or a CNN)
on a training sample."""

import geoml_hub.wps.ogc.operations as operations
import geoml_hub.wps.ogc.wpsio as wpsio
from geoml_hub.wps.ogc.process import FORMATS, GeomlProcess


class TrainModel(GeomlProcess):
    identifier = "train_model"
    param_class = operations.TrainConfig
    kubernetes = True
    chain = {"samples": (("balance_samples", "manifest"), ("extract_samples", "samples"))}

    def __init__(self):
        inputs = [
            wpsio.samples_input("The files a manifest lists must lie inside the data roots, the workspace or your "
                                "jobs' outputs."),
            *wpsio.param_inputs(operations.TrainConfig),
        ]
        outputs = [
            wpsio.file_output("model", "Model", wpsio.MODEL_FORMAT,
                              "The trained model (PyTorch file loaded with weights_only): the family, the CNN's "
                              "weights or the tree model (skops, loaded with an allowlist of types) with its "
                              "feature description, classes, bands, normalisation and history. Input of "
                              "evaluate_model and classify_scene as jobs/JOB_ID/model.pt."),
            wpsio.file_output("history", "Training history", FORMATS.CSV,
                              "Per epoch: losses, overall accuracies, learning rate, seconds (tree families: one "
                              "row)."),
            wpsio.file_output("curves", "Learning curves", wpsio.PNG_FORMAT,
                              "Loss and accuracy per epoch (CNN); the 20 most important features (tree families)."),
            wpsio.literal_output("val_overall_accuracy", "Validation overall accuracy", "float",
                                 "Overall accuracy of the best epoch on the validation samples, 0 to 1 (absent with "
                                 "val_fraction 0)."),
            wpsio.literal_output("epochs_run", "Epochs run", "integer", uom="epochs"),
            wpsio.literal_output("best_epoch", "Best epoch", "integer",
                                 "The epoch whose weights were kept (lowest validation loss).", uom="epochs"),
            wpsio.literal_output("n_train", "Training samples", "integer"),
            wpsio.literal_output("n_val", "Validation samples", "integer"),
            wpsio.literal_output("device", "Device", "string", "Where the model was trained (cpu or cuda)."),
            wpsio.literal_output("seconds", "Training time", "float", uom="seconds"),
        ]
        super().__init__(
            self._handler, title="Train a classifier",
            abstract="Trains a classifier on a training-sample tree or a balanced manifest. family forest (the "
                     "default), boosting or ensemble: scikit-learn trees on per-band statistics, texture and "
                     "spectral indices of patches (band values and indices of pixels), a stratified validation "
                     "split, then a refit on all samples. family cnn: a PyTorch patch CNN (a per-pixel network "
                     "for 1x1 samples) with per-band normalisation, AdamW with a one-cycle schedule, label "
                     "smoothing, dihedral augmentation and early stopping on the validation split. Defaults are "
                     "the recommended settings of docs/training.md. Progress is reported per epoch (CNN) or step.",
            keywords=["training", "random forest", "gradient boosting", "deep learning", "CNN", "PyTorch",
                      "classification"],
            inputs=inputs, outputs=outputs, datasets={"samples": "any"})

    def _handler(self, request, response):
        result = operations.train_model(self.job, self.dataset(request, "samples"), roots=self.allowed_roots(),
                                   progress=self.progress(response), **self.param_values(request))
        self.set_outputs(response, result)
        wpsio.drop_unset_outputs(request, response, result)
        return response
