"""WPS process ``balance_samples``: cluster-based balancing of a training sample."""

import geoml_hub.wps.ogc.operations as operations
import geoml_hub.wps.ogc.wpsio as wpsio
from geoml_hub.wps.ogc.process import FORMATS, GeomlProcess


class BalanceSamples(GeomlProcess):
    identifier = "balance_samples"
    param_class = operations.BalanceParams
    chain = {"samples": (("extract_samples", "samples"),)}

    def __init__(self):
        inputs = [
            wpsio.samples_input("The files a manifest lists must lie inside the data roots, the workspace or your "
                                "jobs' outputs."),
            *wpsio.param_inputs(operations.BalanceParams),
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
            self._handler, title="Balance a training sample",
            abstract="Cluster-based training-sample balancing after the ISDCT SB RAS geoportal algorithm (Avramenko, "
                     "Popova, Fedorov, Cloud service of Geoportal ISDCT SB RAS for machine learning, ITAMS 2021): "
                     "per sample and band the mean and standard deviation of its pixels, k-means clustering of these "
                     "features, clusters ordered by size, small clusters kept whole and every step-th sample taken "
                     "from the larger ones. No class is thinned below the rarest class (see docs/algorithms.md). "
                     "Writes a manifest of the kept samples for train_model.",
            keywords=["balancing", "training samples", "k-means", "clustering", "ISDCT"],
            inputs=inputs, outputs=outputs, datasets={"samples": "any"})

    def _handler(self, request, response):
        result = operations.balance_samples(self.job, self.dataset(request, "samples"), roots=self.allowed_roots(),
                                       progress=self.progress(response), **self.param_values(request))
        self.set_outputs(response, result)
        return response
