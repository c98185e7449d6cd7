"""WPS process ``balance_samples``: cluster-based balancing of a training sample."""

from geoml_hub.wps import tasks
from geoml_hub.wps import wpsio
from geoml_hub.wps.process import FORMATS, GeomlProcess

_MAX = 10 ** 9


class BalanceSamples(GeomlProcess):
    def __init__(self):
        inputs = [
            wpsio.samples_input("The files a manifest lists must lie inside the data roots, the workspace or your "
                                "jobs' outputs."),
            wpsio.literal_input("threshold", "Threshold", "integer",
                                "Clusters with fewer samples than this are kept whole. Default: per class, the "
                                "target divided by the number of clusters (at least 2).",
                                minimum=1, maximum=_MAX, min_occurs=0, uom="samples"),
            wpsio.literal_input("step", "Step", "integer",
                                "Keep every step-th sample of the larger clusters. Default: derived per class from "
                                "the target. No class is thinned below the size of the rarest class.",
                                minimum=1, maximum=_MAX, min_occurs=0),
            wpsio.literal_input("target", "Target", "integer",
                                "Samples wanted per class when step is not given. Default: the median class size "
                                "(classes above it are thinned towards it, the others are kept whole).",
                                minimum=1, maximum=_MAX, min_occurs=0, uom="samples"),
            wpsio.literal_input("clusters", "Clusters", "integer",
                                "k-means clusters per class (or in all, with per_class false). Default: about 5 "
                                "samples per cluster, 1 to 10 per class.", minimum=1, maximum=1000, min_occurs=0),
            wpsio.literal_input("per_class", "Cluster per class", "boolean",
                                "Cluster each class separately (true) or all samples together (false).",
                                default=True),
            wpsio.seed_input("k-means"),
        ]
        outputs = [
            wpsio.file_output("manifest", "Balanced manifest", FORMATS.CSV,
                              "The kept samples (file, index, class, code, cluster), by class and clusters of "
                              "ascending size; give its dataset name jobs/JOB_ID/manifest.csv to train_model."),
            wpsio.file_output("summary", "Balancing summary", FORMATS.JSON,
                              "Parameters, samples per class and per cluster before and after, the rule applied to "
                              "each cluster, effective steps and thresholds, class ratios."),
            wpsio.file_output("clusters_plot", "Cluster plot", wpsio.PNG_FORMAT,
                              "Samples in the first two principal components of their features, one panel per "
                              "class, coloured by cluster; thinned-out samples are grey crosses."),
            wpsio.literal_output("samples_before", "Samples before", "integer"),
            wpsio.literal_output("samples_after", "Samples after", "integer"),
            wpsio.literal_output("ratio_before", "Class ratio before", "float",
                                 "Largest class size divided by the smallest, before balancing."),
            wpsio.literal_output("ratio_after", "Class ratio after", "float",
                                 "Largest class size divided by the smallest, after balancing."),
            wpsio.literal_output("n_classes", "Classes", "integer"),
        ]
        super().__init__(
            self._handler, identifier="balance_samples", title="Balance a training sample",
            abstract="Cluster-based training-sample balancing after the ISDCT SB RAS geoportal algorithm (Avramenko, "
                     "Popova, Fedorov, Cloud service of Geoportal ISDCT SB RAS for machine learning, ITAMS 2021): "
                     "per sample and band the mean and standard deviation of its pixels, k-means clustering of these "
                     "features, clusters ordered by size, small clusters kept whole and every step-th sample taken "
                     "from the larger ones. No class is thinned below the rarest class (see docs/algorithms.md). "
                     "Writes a manifest of the kept samples for train_model.",
            keywords=["balancing", "training samples", "k-means", "clustering", "ISDCT"],
            inputs=inputs, outputs=outputs, datasets={"samples": "any"})

    def _handler(self, request, response):
        result = tasks.balance_samples(
            self.job, self.dataset(request, "samples"),
            threshold=self.value(request, "threshold"), step=self.value(request, "step"),
            target=self.value(request, "target"), clusters=self.value(request, "clusters"),
            per_class=self.value(request, "per_class", True), seed=self.value(request, "seed", 0),
            roots=self.allowed_roots(), progress=self.progress(response))
        self.set_outputs(response, result)
        return response
