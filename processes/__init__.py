"""geoml-hub's OGC WPS processes (installed as ``geoml_hub.processes``): the process registry.

:data:`PROCESSES` lists every process class, in the order GetCapabilities lists them (as
bird-house's finch does). Each class carries its own attributes
(:class:`geoml_hub.wps.ogc.process.GeomlProcess`): its parameters (``param_class``), whether it
may run as a Kubernetes Job (``kubernetes``), whether its outputs are a quality-control report
(``qc``) and how the web map fills its inputs from earlier jobs (``chain``). The WPS service
(:func:`build_service` here, :func:`geoml_hub.wps.ogc.service.build_service` below it), the check
of the ``kubernetes_processes`` setting, the chart's schema and the web map read them from here.

The process modules import only the WPS's OGC layer (:mod:`geoml_hub.wps.ogc`: the process base
class, the input/output helpers and :mod:`~geoml_hub.wps.ogc.operations`, which runs the core);
the job system and the HTTP app import this registry (``tests/test_architecture.py``).
"""

import json
from typing import List, Optional, Sequence, Tuple

import geoml_hub.wps.ogc.service as _service

from .balance_samples import BalanceSamples
from .check_compatibility import CheckCompatibility
from .classify_scene import ClassifyScene
from .compare_classifications import CompareClassifications
from .evaluate_model import EvaluateModel
from .extract_samples import ExtractSamples
from .train_model import TrainModel
from .validate_classification import ValidateClassification

#: The process classes, in the order GetCapabilities lists them.
PROCESSES = [ExtractSamples, BalanceSamples, TrainModel, EvaluateModel, CheckCompatibility, ClassifyScene,
             ValidateClassification, CompareClassifications]


def identifiers() -> Tuple[str, ...]:
    """The process identifiers, in :data:`PROCESSES` order."""
    return tuple(cls.identifier for cls in PROCESSES)


def kubernetes_capable() -> Tuple[str, ...]:
    """The identifiers of the processes that may run as Kubernetes Jobs."""
    return tuple(cls.identifier for cls in PROCESSES if cls.kubernetes)


def load() -> List:
    """One new instance of every process (PyWPS deep-copies it per request)."""
    return [cls() for cls in PROCESSES]


def build_service(settings, processes: Optional[Sequence] = None):
    """The :class:`pywps.Service` for ``settings`` with the registry's processes (or ``processes``):
    :func:`geoml_hub.wps.ogc.service.build_service`."""
    return _service.build_service(settings, load() if processes is None else processes)


def build_service_light(settings, processes: Optional[Sequence] = None):
    """Like :func:`build_service` for already prepared settings (job workers: nothing is written)."""
    return _service.build_service_light(settings, load() if processes is None else processes)


#: Where the chart's schema lists the processes that may run as Kubernetes Jobs.
CHART_ENUM_PATH = ("properties", "wps", "properties", "jobs", "properties", "processes", "items", "enum")


def chart_schema(schema: dict) -> dict:
    """``values.schema.json`` of the Helm chart with the enum of ``wps.jobs.processes`` set to
    :func:`kubernetes_capable` (the input is not changed).

    :mod:`geoml_hub.tools.chartschema` applies it when it writes the file from ``values.schema.yaml``
    (``python -m geoml_hub.tools.chartschema helm/geoml-hub``); ``tests/test_wps_processes.py`` fails
    when the file is out of date.
    """
    out = json.loads(json.dumps(schema))
    node = out
    for key in CHART_ENUM_PATH[:-1]:
        node = node[key]
    node[CHART_ENUM_PATH[-1]] = list(kubernetes_capable())
    return out
