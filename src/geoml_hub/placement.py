"""Node placement of GPU and CPU work on Kubernetes, declared once in ``placement.yaml``.

``placement.yaml`` (beside this module; the Helm chart links it as ``files/placement.yaml``)
holds the extended resource of one GPU, the node selector and tolerations of GPU pods and the
node affinity that keeps CPU pods off GPU nodes. The notebook profiles (``placement: gpu`` /
``placement: cpu``), the chart's ``wps.jobs`` defaults and :class:`geoml_hub.wps.k8s.JobSpec`
all take them from there.

The functions return fresh copies: callers may change what they get.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Dict, List

import yaml

PLACEMENT_FILE = Path(__file__).resolve().with_name("placement.yaml")


@functools.lru_cache(maxsize=1)
def _load() -> Dict[str, Any]:
    return yaml.safe_load(PLACEMENT_FILE.read_text(encoding="utf-8"))


def gpu_resource() -> str:
    """Extended resource name of one GPU (``nvidia.com/gpu``)."""
    return str(_load()["gpu"]["resource"])


def gpu_node_selector() -> Dict[str, str]:
    """Node labels GPU pods must match (``{"nvidia.com/gpu.present": "true"}``)."""
    return copy.deepcopy(_load()["gpu"]["nodeSelector"])


def gpu_tolerations() -> List[Dict[str, Any]]:
    """Tolerations of GPU pods (of the GPU nodes' taint)."""
    return copy.deepcopy(_load()["gpu"]["tolerations"])


def cpu_node_affinity_terms() -> List[Dict[str, Any]]:
    """Required node affinity terms (``nodeSelectorTerms``) that keep CPU pods off GPU nodes."""
    return copy.deepcopy(_load()["cpu"]["nodeAffinityTerms"])


#: the extended resource of one GPU, as a constant for code that only needs the name
GPU_RESOURCE = gpu_resource()
