"""Deprecated: the PyWPS service moved to :mod:`geoml_hub.wps.ogc.service` and the registry's
service to :func:`geoml_hub.processes.build_service` (issue 13). This module keeps the old
names (``build_service(settings)`` with the registry's processes by default, ``load_processes``,
``process_classes``) and warns on import; it goes in a later release."""

import warnings
from typing import List

from geoml_hub import processes as _registry
from geoml_hub.wps.ogc.service import (WPS_NAMESPACES, WPS_REQUESTS, GeomlService,  # noqa: F401
                                       check_input_counts, check_kubernetes_processes, foreign_root,
                                       process_copy)

warnings.warn("geoml_hub.wps.service moved to geoml_hub.wps.ogc.service (the registry's service: "
              "geoml_hub.processes.build_service)", DeprecationWarning, stacklevel=2)

build_service = _registry.build_service
build_service_light = _registry.build_service_light
load_processes = _registry.load


def process_classes() -> List[type]:
    """The process classes of the registry, :data:`geoml_hub.processes.PROCESSES`."""
    return list(_registry.PROCESSES)
