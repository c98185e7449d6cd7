"""WPS process ``train_model``: train a CNN (or per-pixel network) on a training sample."""

from geoml_hub.wps import tasks
from geoml_hub.wps import wpsio
from geoml_hub.wps.process import FORMATS, GeomlProcess

#: The defaults shown to clients: the core's recommended settings (geoml_hub.training.TrainConfig;
#: a test keeps them equal).
DEFAULTS = {"epochs": 60, "batch_size": 32, "learning_rate": 0.003, "val_fraction": 0.15, "patience": 20,
            "augment": True, "seed": 0, "device": "auto"}


class TrainModel(GeomlProcess):
    def __init__(self):
        inputs = [
            wpsio.samples_input("The files a manifest lists must lie inside the data roots, the workspace or your "
                                "jobs' outputs."),
            wpsio.literal_input("epochs", "Epochs", "integer",
                                "Maximum number of epochs (the one-cycle learning-rate schedule spans them; early "
                                "stopping may end training sooner).", default=DEFAULTS["epochs"],
                                minimum=1, maximum=500, uom="epochs"),
            wpsio.literal_input("batch_size", "Batch size", "integer", "Samples per optimisation step.",
                                default=DEFAULTS["batch_size"], minimum=1, maximum=4096, uom="samples"),
            wpsio.literal_input("learning_rate", "Learning rate", "float", "Peak learning rate of AdamW.",
                                default=DEFAULTS["learning_rate"], minimum=1e-6, maximum=1.0),
            wpsio.literal_input("val_fraction", "Validation fraction", "float",
                                "Share of each class held out for validation and early stopping; 0: no validation "
                                "(no early stopping, no validation accuracy).", default=DEFAULTS["val_fraction"],
                                minimum=0.0, maximum=0.9),
            wpsio.literal_input("patience", "Patience", "integer",
                                "Epochs without a lower validation loss before training stops.",
                                default=DEFAULTS["patience"], minimum=1, maximum=500, uom="epochs"),
            wpsio.device_input(),
            wpsio.literal_input("bands", "Bands", "string",
                                "Subset of the samples' bands to train on, 1-based and comma-separated, e.g. 2,3,4,8 "
                                "(EuroSAT: B02, B03, B04, B08). Default: all bands.", min_occurs=0),
            wpsio.literal_input("augment", "Augment", "boolean",
                                "Random flips and transpositions of the patches (the 8 dihedral views).",
                                default=DEFAULTS["augment"]),
            wpsio.seed_input("the validation split, the weights and the augmentation"),
        ]
        outputs = [
            wpsio.file_output("model", "Model", wpsio.MODEL_FORMAT,
                              "The trained model (PyTorch file loaded with weights_only): weights, architecture, "
                              "classes, bands, normalisation and history. Input of evaluate_model and classify_scene "
                              "as jobs/JOB_ID/model.pt."),
            wpsio.file_output("history", "Training history", FORMATS.CSV,
                              "Per epoch: losses, overall accuracies, learning rate, seconds."),
            wpsio.file_output("curves", "Learning curves", wpsio.PNG_FORMAT, "Loss and accuracy per epoch."),
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
            self._handler, identifier="train_model", title="Train a classifier",
            abstract="Trains a PyTorch patch CNN (a per-pixel network for 1x1 samples) on a training-sample tree or a "
                     "balanced manifest: per-band normalisation, convolution blocks, AdamW with a one-cycle "
                     "schedule, label smoothing, dihedral augmentation, a stratified validation split with early "
                     "stopping; the best epoch's weights are kept. Defaults are the recommended settings of "
                     "docs/training.md. Progress is reported per epoch.",
            keywords=["training", "deep learning", "CNN", "PyTorch", "classification"],
            inputs=inputs, outputs=outputs, datasets={"samples": "any"})

    def check(self, wps_request):
        tasks.parse_int_list(self.value(wps_request, "bands"), "bands")

    def _handler(self, request, response):
        result = tasks.train_model(
            self.job, self.dataset(request, "samples"),
            **{name: self.value(request, name, default) for name, default in DEFAULTS.items()},
            bands=self.value(request, "bands"), roots=self.allowed_roots(), progress=self.progress(response))
        self.set_outputs(response, result)
        wpsio.drop_unset_outputs(request, response, result)
        return response
