"""geoml-hub: machine learning on satellite imagery — the scientific core.

Training-sample trees (:mod:`geoml_hub.samples`), cluster-based sample balancing
(:mod:`geoml_hub.balancing`), PyTorch training (:mod:`geoml_hub.training`), patch and
scene classification (:mod:`geoml_hub.classification`), sample extraction from labelled
scenes (:mod:`geoml_hub.extraction`) and PyCM quality control
(:mod:`geoml_hub.validation`). The core never imports pywps.

The version is the installed distribution's (pyproject.toml ``version``, the one place it is
written; ``tests/test_version.py`` checks the literal copies Helm and Docker need).
"""

from importlib.metadata import PackageNotFoundError, version as _distribution_version

try:
    __version__ = _distribution_version("geoml-hub")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
