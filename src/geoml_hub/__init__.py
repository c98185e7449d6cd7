"""geoml-hub: machine learning on satellite imagery — the scientific core.

Training-sample trees (:mod:`geoml_hub.samples`), cluster-based sample balancing
(:mod:`geoml_hub.balancing`), PyTorch training (:mod:`geoml_hub.training`), patch and
scene classification (:mod:`geoml_hub.classification`), sample extraction from labelled
scenes (:mod:`geoml_hub.extraction`) and PyCM quality control
(:mod:`geoml_hub.validation`). The core never imports pywps.
"""

__version__ = "0.1.0"
