"""WPS jobs as Kubernetes Jobs (the Job backend, used by the dispatcher with ``backend = kubernetes``).

A job runs the same worker as the local backend, ``python -m geoml_hub.wps.jobs.worker SETTINGS
JOB_ID``, but in a pod of a ``batch/v1`` Job, in the CPU or the CUDA image chosen by the
job's ``device`` input, on nodes selected like the notebook profiles (both from
:mod:`geoml_hub.placement`): GPU jobs get a limit of one GPU (``nvidia.com/gpu: 1``), the GPU
node selector and the toleration for the GPU taint; CPU jobs are kept off GPU nodes. The WPS outputs volume, the shared data and the results
volume are mounted as in the WPS Deployment, so the worker finds the job table, the stored
request and its output directory where the server put them.

- :func:`job_manifest` builds the Job (a plain dict, as ``kubectl`` would read it);
- :func:`job_state` maps a Job and its pods, as the ``kubernetes`` client returns them, to
  ``running``, ``succeeded``, ``failed`` or ``cancelled`` and a reason a user can act on
  (deadline, back-off limit, image pull failure naming the image, crash loop, out of memory);
- :class:`KubernetesJobBackend` submits, watches, cancels (delete, foreground propagation)
  and reads the logs, with ``BatchV1Api``/``CoreV1Api`` objects given to it;
- :func:`load_job_spec` reads the JobSpec JSON the chart renders, and :func:`backend_for`
  builds the backend of a server's settings (in-cluster ServiceAccount or a kubeconfig).

The WPS ServiceAccount of the chart may create/get/list/watch/delete Jobs and
get/list/watch pods and read ``pods/log``: that is all this module uses.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ... import placement
from ...blocks import block_name, block_progress
from ...errors import GeomlError, ParameterError
from ...progress import ProgressCallback, report

#: Devices a job may ask for; ``auto`` means ``JobSpec.default_device``.
DEVICES = ("cpu", "cuda", "auto")

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

COMPONENT = "wps-job"
LABEL_JOB_ID = "geoml-hub/job-id"
LABEL_PROCESS = "geoml-hub/process"
LABEL_DEVICE = "geoml-hub/device"
CONTAINER = "worker"

#: Container waiting reasons after which the pod will not start by itself: the job fails at once
#: (otherwise it would only end at ``activeDeadlineSeconds``).
IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")

LOGGER = logging.getLogger("geoml_hub.wps")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _default_resources() -> Dict[str, Dict[str, Dict[str, str]]]:
    return {
        "cpu": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}},
        "cuda": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "8", "memory": "24Gi"}},
    }


@dataclass
class JobSpec:
    """How WPS jobs run on the cluster (the same for every job; the chart's values fill it).

    Attributes
    ----------
    namespace : str
        Namespace of the Jobs (the WPS's own: its Role allows nothing else).
    cpu_image, cuda_image : str
        Images of the worker for ``device`` ``cpu`` and ``cuda`` (same geoml-hub version as the WPS).
    service_account : str
        ServiceAccount of the job pods ("": the namespace default). The worker needs no API
        access, so its token is never mounted.
    image_pull_policy : str
    image_pull_secrets : list of str
    volumes, volume_mounts : list of dict
        Pod volumes and the worker's mounts, as in a manifest (the WPS outputs PVC at the
        state directory, the shared data read-only, the results volume). ``/tmp`` and
        ``/dev/shm`` are added here.
    default_device : str
        What ``auto`` means: ``cpu`` or ``cuda``.
    gpu_node_selector : dict, gpu_tolerations : list of dict
        Placement of CUDA jobs (default: :mod:`geoml_hub.placement`, as the CUDA profile).
    cpu_node_selector : dict, cpu_node_affinity : list of dict
        Placement of CPU jobs (nodeSelectorTerms; by default off GPU nodes, as the CPU profile).
    gpu_resource : str
        Extended resource of one GPU (default: :mod:`geoml_hub.placement`, ``nvidia.com/gpu``);
        CUDA jobs get a limit of 1.
    resources : dict
        ``{"cpu": {"requests": ..., "limits": ...}, "cuda": {...}}``.
    backoff_limit : int
        Pod failures before the Job fails (0: a failed run is not retried).
    active_deadline_seconds : int
        Wall-clock limit of a job (pending time included); then it fails with ``DeadlineExceeded``.
    ttl_seconds_after_finished : int or None
        Kubernetes removes a finished Job (and its pods, with their logs) after this long.
    shm_size : str
        Size of the memory-backed ``/dev/shm`` (PyTorch DataLoader workers need more than 64 MB).
    labels : dict
        Extra labels of the Job and its pods (e.g. ``app.kubernetes.io/instance``).
    env : dict
        Extra environment of the worker.
    env_from : list of dict
        Extra environment entries as in a manifest, e.g. ``valueFrom.secretKeyRef`` (the chart
        passes the job database URL this way, see ``database = env:NAME`` in the settings).
    name_prefix : str
        Job names are ``<prefix><job id>``.
    """

    cpu_image: str
    cuda_image: str
    namespace: str = "default"
    service_account: str = ""
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: List[str] = field(default_factory=list)
    volumes: List[Dict[str, Any]] = field(default_factory=list)
    volume_mounts: List[Dict[str, Any]] = field(default_factory=list)
    default_device: str = "cpu"
    gpu_node_selector: Dict[str, str] = field(default_factory=placement.gpu_node_selector)
    gpu_tolerations: List[Dict[str, Any]] = field(default_factory=placement.gpu_tolerations)
    cpu_node_selector: Dict[str, str] = field(default_factory=dict)
    cpu_node_affinity: List[Dict[str, Any]] = field(default_factory=placement.cpu_node_affinity_terms)
    gpu_resource: str = field(default_factory=placement.gpu_resource)
    resources: Dict[str, Dict[str, Dict[str, str]]] = field(default_factory=_default_resources)
    backoff_limit: int = 0
    active_deadline_seconds: int = 24 * 3600
    ttl_seconds_after_finished: Optional[int] = 7 * 24 * 3600
    shm_size: str = "2Gi"
    run_as_user: int = 1000
    run_as_group: int = 1000
    fs_group: int = 1000
    labels: Dict[str, str] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    env_from: List[Dict[str, Any]] = field(default_factory=list)
    name_prefix: str = "geoml-wps-"

    def __post_init__(self):
        if self.default_device not in ("cpu", "cuda"):
            raise ValueError(f"default_device must be cpu or cuda, not {self.default_device!r}")
        if self.backoff_limit < 0:
            raise ValueError("backoff_limit must be >= 0")
        if self.active_deadline_seconds is not None and self.active_deadline_seconds < 1:
            raise ValueError("active_deadline_seconds must be >= 1")
        for k, v in self.labels.items():
            if not _LABEL_VALUE.match(str(v)) or len(str(v)) > 63:
                raise ValueError(f"label {k}={v!r} is not a valid label value")

    def resolve_device(self, device: Optional[str]) -> str:
        """``cpu`` or ``cuda`` for a job's ``device`` input (``auto``/empty: the default)."""
        device = (device or "auto").lower()
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        return self.default_device if device == "auto" else device

    def job_name(self, job_id: str) -> str:
        name = f"{self.name_prefix}{job_id}".lower()
        if len(name) > 63 or not _DNS_LABEL.match(name):
            raise ValueError(f"job id {job_id!r} does not make a valid Job name ({name!r})")
        return name


def _label_value(value: str) -> str:
    """``value`` made a valid label value (at most 63 characters, alphanumeric at both ends)."""
    v = re.sub(r"[^A-Za-z0-9_.-]", "-", str(value))[:63]
    return v.strip("-_.")


def job_labels(spec: JobSpec, job_id: str, identifier: str, device: str) -> Dict[str, str]:
    labels = dict(spec.labels)
    labels.update({
        "app.kubernetes.io/name": labels.get("app.kubernetes.io/name", "geoml-hub"),
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": "geoml-hub-wps",
        LABEL_JOB_ID: _label_value(job_id),
        LABEL_PROCESS: _label_value(identifier),
        LABEL_DEVICE: device,
    })
    return labels


def pod_template(spec: JobSpec, labels: Dict[str, str], dev: str, command: List[str],
                 extra_env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The pod template of every Job the WPS creates (a WPS job's, or a fan-out block's): the
    worker image of ``dev``, its placement and resources, the volumes and mounts of the WPS,
    the non-root security context, no ServiceAccount token.

    Parameters
    ----------
    spec : JobSpec
    labels : dict
        Labels of the pods.
    dev : {'cpu', 'cuda'}
        The resolved device (:meth:`JobSpec.resolve_device`).
    command : list of str
        The container's command.
    extra_env : dict, optional
        More environment (after the spec's), e.g. ``JOB_COMPLETION_INDEX`` of a block Job.
    """
    res = copy.deepcopy(spec.resources.get(dev) or {})
    res.setdefault("requests", {})
    res.setdefault("limits", {})
    env = {"PYTHONUNBUFFERED": "1", "HOME": "/tmp", "MPLBACKEND": "Agg", "GEOML_DEVICE": dev}
    pod: Dict[str, Any] = {}
    if dev == "cuda":
        res["limits"][spec.gpu_resource] = "1"
        res["requests"].pop(spec.gpu_resource, None)  # extended resources: the request follows the limit
        # NVIDIA_VISIBLE_DEVICES is left to the device plugin (it names the GPU it allocated)
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
        if spec.gpu_node_selector:
            pod["nodeSelector"] = dict(spec.gpu_node_selector)
        if spec.gpu_tolerations:
            pod["tolerations"] = copy.deepcopy(spec.gpu_tolerations)
        image = spec.cuda_image
    else:
        for part in ("requests", "limits"):
            res[part].pop(spec.gpu_resource, None)
        env["CUDA_VISIBLE_DEVICES"] = ""
        if spec.cpu_node_selector:
            pod["nodeSelector"] = dict(spec.cpu_node_selector)
        if spec.cpu_node_affinity:
            pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": copy.deepcopy(spec.cpu_node_affinity)}}}
        image = spec.cpu_image
    env.update({k: str(v) for k, v in spec.env.items()})
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    res = {k: v for k, v in res.items() if v}

    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": [str(c) for c in command],
        "env": [{"name": k, "value": v} for k, v in env.items()] + copy.deepcopy(spec.env_from),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}]
        + copy.deepcopy(spec.volume_mounts),
    }
    if res:
        container["resources"] = res
    pod_spec: Dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.run_as_user,
            "runAsGroup": spec.run_as_group,
            "fsGroup": spec.fs_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}]
        + copy.deepcopy(spec.volumes),
    }
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in spec.image_pull_secrets]
    pod_spec.update(pod)
    return {"metadata": {"labels": dict(labels)}, "spec": pod_spec}


def _job(spec: JobSpec, name: str, labels: Dict[str, str], annotations: Dict[str, str], template: Dict[str, Any],
         backoff_limit: Optional[int], **extra) -> Dict[str, Any]:
    job_spec: Dict[str, Any] = {}
    if backoff_limit is not None:
        job_spec["backoffLimit"] = backoff_limit
    job_spec.update(extra)
    job_spec["template"] = template
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": spec.namespace, "labels": labels, "annotations": annotations},
            "spec": job_spec}


def job_manifest(spec: JobSpec, job_id: str, identifier: str, device: Optional[str], settings_path: str) -> Dict[str, Any]:
    """The ``batch/v1`` Job that runs WPS job ``job_id`` (process ``identifier``).

    Parameters
    ----------
    spec : JobSpec
    job_id : str
        The WPS job's id (its uuid); the Job is named ``spec.name_prefix + job_id``.
    identifier : str
        The WPS process (``train_model``, ``classify_scene``), for labels.
    device : str
        ``cpu``, ``cuda`` or ``auto``.
    settings_path : str
        The settings JSON of the server as the pod sees it (on the mounted outputs volume).
    """
    dev = spec.resolve_device(device)
    name = spec.job_name(job_id)
    labels = job_labels(spec, job_id, identifier, dev)
    template = pod_template(spec, labels, dev,
                            ["python", "-m", "geoml_hub.wps.jobs.worker", str(settings_path), job_id])
    return _job(spec, name, labels, {"geoml-hub/job-id": job_id, "geoml-hub/process": identifier}, template,
                spec.backoff_limit)


# -- fan-out Jobs --------------------------------------------------------------------------------
#: Label of the Jobs and pods of a WPS job's fan-out (value: the WPS job id); they do not carry
#: ``geoml-hub/job-id``, which names the one Job that runs a whole WPS job.
LABEL_FAN_OUT = "geoml-hub/fan-out-of"
LABEL_BLOCK = "geoml-hub/block-index"
#: First Kubernetes version with Indexed Jobs on by default (beta; GA in 1.24).
INDEXED_SINCE = (1, 22)
#: First version with ``backoffLimitPerIndex`` on by default (beta; GA in 1.33).
PER_INDEX_SINCE = (1, 29)


def fan_out_manifests(spec: JobSpec, job_id: str, identifier: str, device: Optional[str], task_path: str,
                      blocks: int, parallelism: int, retries: int,
                      version: Optional[Tuple[int, int]]) -> List[Dict[str, Any]]:
    """The Job(s) that run the blocks of a fan-out (``python -m geoml_hub.blocks TASK``).

    * Kubernetes 1.22 or newer (``version``): one **Indexed Job**, ``completionMode: Indexed``,
      ``completions = blocks``, ``parallelism``; each pod's ``JOB_COMPLETION_INDEX`` (set by
      Kubernetes) is its block. A failed block is retried ``retries`` times on its own with
      ``backoffLimitPerIndex`` from 1.29 on; before that ``backoffLimit = retries × blocks``
      counts the failures of all blocks together.
    * Older servers, or an unknown version: **one Job per block**, named ``...-b<index>``, with
      ``JOB_COMPLETION_INDEX`` set in its pod's environment and ``backoffLimit = retries`` (so a
      block's retries are its own, as with ``backoffLimitPerIndex``). The caller creates them,
      at most ``parallelism`` running at once (:class:`ClusterBlockRunner`). Kubernetes 1.20
      drops ``completionMode`` silently (a plain Job of ``blocks`` completions whose pods all
      would run the same block), so the version decides, not the API's answer.

    Returns
    -------
    list of dict
        One manifest (Indexed) or ``blocks`` manifests (index order).
    """
    dev = spec.resolve_device(device)
    base = spec.job_name(job_id)
    if len(f"{base}-b{int(blocks) - 1}") > 63 or len(f"{base}-blocks") > 63:
        raise ValueError(f"job id {job_id!r} with name prefix {spec.name_prefix!r} is too long for block Job names")
    labels = job_labels(spec, job_id, identifier, dev)
    labels.pop(LABEL_JOB_ID)
    labels["app.kubernetes.io/component"] = COMPONENT + "-block"
    labels[LABEL_FAN_OUT] = _label_value(job_id)
    annotations = {"geoml-hub/job-id": job_id, "geoml-hub/process": identifier, "geoml-hub/task": str(task_path)}
    command = ["python", "-m", "geoml_hub.blocks", str(task_path)]
    if version is not None and tuple(version) >= INDEXED_SINCE:
        template = pod_template(spec, labels, dev, command)
        extra: Dict[str, Any] = {"completionMode": "Indexed", "completions": int(blocks),
                                 "parallelism": int(min(parallelism, blocks))}
        if tuple(version) >= PER_INDEX_SINCE:
            extra["backoffLimitPerIndex"] = int(retries)
            backoff = None  # defaults to "no limit": the per-index limit decides
        else:
            backoff = int(retries) * int(blocks)
        return [_job(spec, f"{base}-blocks", labels, annotations, template, backoff, **extra)]
    out = []
    for i in range(int(blocks)):
        block_labels = dict(labels, **{LABEL_BLOCK: str(i)})
        template = pod_template(spec, block_labels, dev, command, {"JOB_COMPLETION_INDEX": str(i)})
        out.append(_job(spec, f"{base}-b{i}", block_labels, dict(annotations, **{"geoml-hub/block-index": str(i)}),
                        template, int(retries)))
    return out


# -- status mapping ------------------------------------------------------------------------------
def _get(obj, *path):
    """``obj.a.b`` for client model objects, or ``obj["a"]["b"]`` for dicts (camelCase keys
    accepted too); ``None`` when any step is missing."""
    for name in path:
        if obj is None:
            return None
        if isinstance(obj, dict):
            camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
            obj = obj.get(name, obj.get(camel))
        else:
            obj = getattr(obj, name, None)
    return obj


def _true_conditions(job) -> Dict[str, Any]:
    out = {}
    for c in _get(job, "status", "conditions") or []:
        if str(_get(c, "status")) == "True":
            out[_get(c, "type")] = c
    return out


def _container_statuses(pod) -> List[Any]:
    return list(_get(pod, "status", "init_container_statuses") or []) + list(
        _get(pod, "status", "container_statuses") or [])


def _pod_problem(pod) -> Tuple[Optional[str], Optional[str]]:
    """(``fatal``|``note``, message) for what a pod's containers say, or (None, None)."""
    name = _get(pod, "metadata", "name")
    for cs in _container_statuses(pod):
        waiting = _get(cs, "state", "waiting")
        reason = _get(waiting, "reason")
        if reason in IMAGE_REASONS:
            image = _get(cs, "image")
            msg = _get(waiting, "message") or ""
            return "fatal", f"image pull failed ({reason}) for image {image}" + (f": {msg}" if msg else "")
        if reason in CONFIG_REASONS:
            return "fatal", f"the container of pod {name} cannot start ({reason}): {_get(waiting, 'message') or ''}".rstrip(": ")
        if reason == "CrashLoopBackOff":
            last = _get(cs, "last_state", "terminated")
            why = _termination(last) if last is not None else "it keeps exiting"
            return "fatal", f"the worker is in a crash loop (CrashLoopBackOff): {why}"
    for cs in _container_statuses(pod):
        for term in (_get(cs, "state", "terminated"), _get(cs, "last_state", "terminated")):
            if term is not None and _get(term, "exit_code") not in (0, None):
                return "note", f"pod {name}: {_termination(term)}"
    reason = _get(pod, "status", "reason")
    if reason in ("Evicted", "DeadlineExceeded", "OutOfmemory", "OutOfcpu", "NodeLost", "UnexpectedAdmissionError"):
        return "note", f"pod {name} {reason}: {_get(pod, 'status', 'message') or ''}".rstrip(": ")
    return None, None


def _termination(term) -> str:
    reason = _get(term, "reason")
    code = _get(term, "exit_code")
    if reason == "OOMKilled":
        return f"out of memory (OOMKilled, exit code {code}); ask for less data per batch or a larger memory limit"
    text = f"exited with code {code}" + (f" ({reason})" if reason and reason != "Error" else "")
    msg = _get(term, "message")
    return f"{text}: {msg.strip()}" if msg else text


def _sorted_pods(pods: Iterable[Any]) -> List[Any]:
    def key(p):
        t = _get(p, "metadata", "creation_timestamp")
        return (t is None, str(t) if t is not None else "")
    return sorted(pods or [], key=key, reverse=True)


def job_state(job_obj, pods: Iterable[Any] = ()) -> Tuple[str, str]:
    """Map a Kubernetes Job and its pods to a WPS job state.

    Parameters
    ----------
    job_obj : kubernetes.client.V1Job or dict or None
        The Job as ``read_namespaced_job`` returns it (``None``: it does not exist).
    pods : iterable of kubernetes.client.V1Pod (or dicts)
        Its pods (``list_namespaced_pod`` with the job-id label selector).

    Returns
    -------
    (str, str)
        ``running``, ``succeeded``, ``failed`` or ``cancelled`` (the Job is being deleted), and
        the reason (for a failure: what a user can act on).
    """
    if job_obj is None:
        return FAILED, "the Kubernetes Job no longer exists (deleted outside the WPS, or removed after it finished)"
    pods = _sorted_pods(pods)
    conds = _true_conditions(job_obj)
    if _get(job_obj, "metadata", "deletion_timestamp") is not None:
        return CANCELLED, "the Kubernetes Job is being deleted"
    for ok in ("Complete", "SuccessCriteriaMet"):
        if ok in conds:
            return SUCCEEDED, "the Kubernetes Job completed"
    for bad in ("Failed", "FailureTarget"):
        if bad in conds:
            c = conds[bad]
            reason = _get(c, "reason") or "Failed"
            if reason == "DeadlineExceeded":
                deadline = _get(job_obj, "spec", "active_deadline_seconds")
                text = "the job ran past its deadline (DeadlineExceeded" + (
                    f", activeDeadlineSeconds={deadline})" if deadline else ")")
            elif reason == "BackoffLimitExceeded":
                text = "the worker pod failed too often (BackoffLimitExceeded, backoffLimit=" \
                       f"{_get(job_obj, 'spec', 'backoff_limit')})"
            else:
                text = f"the Kubernetes Job failed ({reason})"
                if _get(c, "message"):
                    text += f": {_get(c, 'message')}"
            for p in pods:  # say why the last pod ended (e.g. OOMKilled, an image pull failure)
                kind, msg = _pod_problem(p)
                if msg:
                    text += f"; {msg}"
                    break
            return FAILED, f"failed: {text}"
    if _get(job_obj, "spec", "suspend"):
        return RUNNING, "the Kubernetes Job is suspended"
    for p in pods:
        phase = _get(p, "status", "phase")
        if phase in ("Succeeded", "Failed") and p is not pods[0]:
            continue
        kind, msg = _pod_problem(p)
        if kind == "fatal":
            return FAILED, f"failed: {msg}"
        if phase == "Failed" and msg:
            return RUNNING, f"retrying: {msg}"
        if phase == "Pending":
            for c in _get(p, "status", "conditions") or []:
                if _get(c, "type") == "PodScheduled" and str(_get(c, "status")) == "False":
                    return RUNNING, f"waiting for a node ({_get(c, 'reason') or 'Unschedulable'}): " \
                                    f"{_get(c, 'message') or ''}".rstrip(": ")
            return RUNNING, "pod pending"
        if phase == "Running":
            return RUNNING, f"running in pod {_get(p, 'metadata', 'name')}"
        break
    if not pods:
        return RUNNING, "waiting for the Kubernetes Job's pod"
    return RUNNING, "the Kubernetes Job is running"


# -- the backend ---------------------------------------------------------------------------------
class KubernetesJobBackend:
    """Runs WPS jobs as Kubernetes Jobs with the ``kubernetes`` client API objects given.

    Parameters
    ----------
    spec : JobSpec
    settings_path : str
        The server's settings JSON as the job pods see it (on the outputs volume).
    batch_api : kubernetes.client.BatchV1Api
    core_api : kubernetes.client.CoreV1Api
    """

    def __init__(self, spec: JobSpec, settings_path: str, batch_api, core_api, version_api=None):
        self.spec = spec
        self.settings_path = str(settings_path)
        self.batch = batch_api
        self.core = core_api
        self.version_api = version_api
        self._version: Any = False  # not asked yet

    def server_version(self) -> Optional[Tuple[int, int]]:
        """``(major, minor)`` of the API server (its ``/version``, asked once), or ``None`` when it
        cannot be read (then fan-outs use one Job per block, which every version runs)."""
        if self._version is False:
            self._version = None
            if self.version_api is not None:
                try:
                    info = self.version_api.get_code()
                    self._version = (int(re.sub(r"\D", "", str(_get(info, "major")))),
                                     int(re.sub(r"\D", "", str(_get(info, "minor")))))
                except Exception as exc:  # no /version (or a proxy in the way): the fallback works everywhere
                    LOGGER.warning("cannot read the Kubernetes version: %s; fan-outs use one Job per block", exc)
        return self._version

    def create(self, manifest: Dict[str, Any]) -> None:
        """Create a Job; one of the same name (a retried creation) is left as it is."""
        from kubernetes.client.exceptions import ApiException  # only with backend = kubernetes

        try:
            self.batch.create_namespaced_job(namespace=self.spec.namespace, body=manifest)
        except ApiException as exc:
            if exc.status != 409:  # AlreadyExists
                raise

    def read(self, name: str):
        """The Job ``name``, or ``None`` when it does not exist."""
        from kubernetes.client.exceptions import ApiException  # only with backend = kubernetes

        try:
            return self.batch.read_namespaced_job(name=name, namespace=self.spec.namespace)
        except ApiException as exc:
            if not self._not_found(exc):
                raise
            return None

    def pods_of(self, selector: Dict[str, str]) -> List[Any]:
        ret = self.core.list_namespaced_pod(namespace=self.spec.namespace,
                                            label_selector=",".join(f"{k}={v}" for k, v in selector.items()))
        return list(ret.items or [])

    def fan_out_job_ids(self) -> List[str]:
        """The WPS job ids of the fan-out Jobs in the namespace (label ``geoml-hub/fan-out-of``)."""
        ret = self.batch.list_namespaced_job(namespace=self.spec.namespace, label_selector=LABEL_FAN_OUT)
        return sorted({j.metadata.labels[LABEL_FAN_OUT] for j in ret.items or []})

    def delete_fan_out(self, job_id: str, propagation: str = "Foreground") -> int:
        """Delete the fan-out Jobs of WPS job ``job_id`` (and their pods); return how many."""
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException  # only with backend = kubernetes

        ret = self.batch.list_namespaced_job(namespace=self.spec.namespace,
                                             label_selector=f"{LABEL_FAN_OUT}={_label_value(job_id)}")
        n = 0
        for j in ret.items or []:
            try:
                self.batch.delete_namespaced_job(name=j.metadata.name, namespace=self.spec.namespace,
                                                 body=V1DeleteOptions(propagation_policy=propagation))
                n += 1
            except ApiException as exc:
                if not self._not_found(exc):
                    raise
        return n

    def pod_log(self, pod, tail_lines: int = 20) -> str:
        """The last lines of a pod's worker log ("" when it cannot be read)."""
        try:
            return self.core.read_namespaced_pod_log(name=_get(pod, "metadata", "name"), namespace=self.spec.namespace,
                                                     container=CONTAINER, tail_lines=tail_lines) or ""
        except Exception:  # the pod is gone or never started: the reason says why
            return ""

    @staticmethod
    def _not_found(exc) -> bool:
        return getattr(exc, "status", None) == 404

    def submit(self, job_id: str, identifier: str, device: Optional[str] = "auto") -> str:
        """Create the Job of ``job_id``; return its name. An existing Job of the same name (a
        retried submission) is left as it is."""
        from kubernetes.client.exceptions import ApiException  # only with backend = kubernetes

        manifest = job_manifest(self.spec, job_id, identifier, device, self.settings_path)
        try:
            self.batch.create_namespaced_job(namespace=self.spec.namespace, body=manifest)
        except ApiException as exc:
            if exc.status != 409:  # AlreadyExists
                raise
        return manifest["metadata"]["name"]

    def pods(self, job_id: str) -> List[Any]:
        ret = self.core.list_namespaced_pod(namespace=self.spec.namespace,
                                            label_selector=f"{LABEL_JOB_ID}={_label_value(job_id)}")
        return list(ret.items or [])

    def state(self, job_id: str) -> Tuple[str, str]:
        """``(state, reason)`` of ``job_id`` (see :func:`job_state`)."""
        from kubernetes.client.exceptions import ApiException  # only with backend = kubernetes

        try:
            job = self.batch.read_namespaced_job(name=self.spec.job_name(job_id), namespace=self.spec.namespace)
        except ApiException as exc:
            if not self._not_found(exc):
                raise
            job = None
        return job_state(job, self.pods(job_id) if job is not None else [])

    def _delete(self, job_id: str, propagation: str) -> bool:
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException  # only with backend = kubernetes

        try:
            self.batch.delete_namespaced_job(name=self.spec.job_name(job_id), namespace=self.spec.namespace,
                                             body=V1DeleteOptions(propagation_policy=propagation))
        except ApiException as exc:
            if self._not_found(exc):
                return False
            raise
        return True

    def cancel(self, job_id: str) -> bool:
        """Delete the Job and (foreground propagation) its pods; ``False`` when it did not exist."""
        return self._delete(job_id, "Foreground")

    def job_ids(self) -> List[str]:
        """The WPS job ids (label ``geoml-hub/job-id``) of the Kubernetes Jobs in the namespace."""
        ret = self.batch.list_namespaced_job(namespace=self.spec.namespace, label_selector=LABEL_JOB_ID)
        return [j.metadata.labels[LABEL_JOB_ID] for j in ret.items or []]

    def remove(self, job_id: str) -> bool:
        """Delete the Job of a finished WPS job (its pods in the background); ``False`` when it
        was gone. ``ttlSecondsAfterFinished`` does the same on clusters whose TTL controller is on
        (beta from Kubernetes 1.21): the WPS does not wait for it."""
        return self._delete(job_id, "Background")

    def logs(self, job_id: str, tail_lines: Optional[int] = None) -> str:
        """The worker's log of the newest pod of ``job_id`` ("" when it has no pod yet)."""
        from kubernetes.client.exceptions import ApiException  # only with backend = kubernetes

        for pod in _sorted_pods(self.pods(job_id)):
            kwargs = {"container": CONTAINER}
            if tail_lines is not None:
                kwargs["tail_lines"] = tail_lines
            try:
                return self.core.read_namespaced_pod_log(name=pod.metadata.name, namespace=self.spec.namespace,
                                                         **kwargs) or ""
            except ApiException as exc:
                if exc.status in (400, 404):  # container not started yet, or pod gone
                    continue
                raise
        return ""


# -- the fan-out of one WPS job --------------------------------------------------------------------
class FanOutError(GeomlError):
    """A block of a fan-out failed (the message names the block and the pod's reason)."""


class ClusterBlockRunner:
    """Runs the blocks of a WPS job's fan-out (:mod:`geoml_hub.blocks`) as Kubernetes Jobs and waits
    for them, from the WPS job's worker in the WPS pod (which may use the API; the block pods may not).

    The Job(s) come from :func:`fan_out_manifests`: one Indexed Job on Kubernetes 1.22 or newer,
    else one Job per block, at most ``parallelism`` of them running at once. While they run, the
    WPS job's progress is the sum of the blocks' progress (their ``.progress`` files on the
    shared volume) over the number of blocks. A block that fails after its retries fails the
    WPS job with the block's reason (the pod's termination message, OOMKilled, an image pull
    failure, the deadline); the fan-out's Jobs are deleted then, and after success.

    Parameters
    ----------
    backend : KubernetesJobBackend
    job_id, identifier : str
        The WPS job and its process.
    device : str
        ``cpu``, ``cuda`` or ``auto``.
    blocks, parallelism : int
        Blocks of a scene, and pods at once.
    retries : int
        Retries of a failed block.
    min_pixels : int
        Scenes with at least this many pixels fan out (:meth:`wants`); 0: never.
    poll : float
        Seconds between looks at the Jobs.
    """

    def __init__(self, backend: KubernetesJobBackend, job_id: str, identifier: str, device: Optional[str],
                 blocks: int, parallelism: int, retries: int, min_pixels: int, poll: float = 2.0):
        self.backend = backend
        self.job_id = job_id
        self.identifier = identifier
        self.device = device
        self.blocks = max(1, int(blocks))
        self.parallelism = max(1, int(parallelism))
        self.retries = max(0, int(retries))
        self.min_pixels = int(min_pixels)
        self.poll = poll
        self.created: List[str] = []

    def wants(self, pixels: int) -> bool:
        """Whether a raster of ``pixels`` pixels fans out."""
        return self.min_pixels > 0 and pixels >= self.min_pixels

    def run(self, task_path, progress: Optional[ProgressCallback] = None) -> None:
        """Run every block of ``task_path`` (:func:`geoml_hub.blocks.write_task`) and wait.

        Raises
        ------
        FanOutError
            When a block failed (after its retries) or a Job was deleted.
        """
        from ...blocks import read_task  # the task's plan: how many blocks to run

        _, plan, _ = read_task(task_path)
        n = plan.n
        manifests = fan_out_manifests(self.backend.spec, self.job_id, self.identifier, self.device, str(task_path),
                                      n, self.parallelism, self.retries, self.backend.server_version())
        indexed = manifests[0]["spec"].get("completionMode") == "Indexed"
        self._clear_earlier_attempt()
        LOGGER.info("job %s: %d blocks as %s", self.job_id, n,
                    f"Indexed Job {manifests[0]['metadata']['name']}" if indexed else f"{n} Jobs, {self.parallelism} at once")
        ok = False
        try:
            if indexed:
                self._run_indexed(manifests[0], task_path, n, progress)
            else:
                self._run_per_block(manifests, task_path, n, progress)
            ok = True
        finally:
            try:
                self.backend.delete_fan_out(self.job_id, "Background" if ok else "Foreground")
            except Exception as exc:  # the dispatcher removes them later (remove_finished_cluster_jobs)
                LOGGER.warning("job %s: cannot delete its fan-out Jobs: %s", self.job_id, exc)

    def _clear_earlier_attempt(self, timeout: float = 120.0) -> None:
        """Delete fan-out Jobs left by an earlier attempt of this job (its worker was killed, e.g. the
        WPS pod restarted) and wait until they are gone: the new Jobs have the same names."""
        if not self.backend.delete_fan_out(self.job_id, "Foreground"):
            return
        deadline = time.monotonic() + timeout
        selector = {LABEL_FAN_OUT: _label_value(self.job_id)}
        while time.monotonic() < deadline:
            names = [b for b in self.backend.fan_out_job_ids() if b == _label_value(self.job_id)]
            if not names and not self.backend.pods_of(selector):
                return
            time.sleep(self.poll)
        raise FanOutError(f"the fan-out Jobs of an earlier attempt of job {self.job_id} were not deleted within "
                          f"{timeout:g} s")

    def _report(self, task_path, n, progress, running: int) -> None:
        folder = Path(task_path).parent
        done = sum(1 for i in range(n) if (folder / block_name(i, ".json")).exists())
        report(progress, block_progress(folder, n), f"blocks on Kubernetes: {done}/{n} done, {running} running")

    def _failed(self, what: str, reason: str, pods: List[Any]) -> FanOutError:
        for pod in _sorted_pods(pods):
            if _get(pod, "status", "phase") == "Failed":
                tail = self.backend.pod_log(pod)
                if tail:
                    LOGGER.error("job %s: log of the failed pod %s:\n%s", self.job_id, _get(pod, "metadata", "name"), tail)
                break
        return FanOutError(f"{what} failed: {reason.removeprefix('failed: ')}")

    def _run_indexed(self, manifest, task_path, n, progress) -> None:
        name = manifest["metadata"]["name"]
        self.backend.create(manifest)
        self.created.append(name)
        selector = {LABEL_FAN_OUT: _label_value(self.job_id)}
        while True:
            job = self.backend.read(name)
            if job is None:
                raise FanOutError(f"the Indexed Job {name} no longer exists (deleted outside the WPS)")
            pods = self.backend.pods_of(selector)
            state, reason = job_state(job, pods)
            failed_indexes = _get(job, "status", "failed_indexes")
            if state == FAILED or failed_indexes:
                if failed_indexes and state != FAILED:
                    reason = f"block(s) {failed_indexes} failed after {self.retries} retries"
                    for p in _sorted_pods(pods):
                        kind, msg = _pod_problem(p)
                        if msg:
                            reason += f"; {msg}"
                            break
                raise self._failed(f"the Indexed Job {name}", reason, pods)
            if state == SUCCEEDED:
                return
            running = sum(1 for p in pods if _get(p, "status", "phase") in ("Pending", "Running"))
            self._report(task_path, n, progress, running)
            time.sleep(self.poll)

    def _run_per_block(self, manifests, task_path, n, progress) -> None:
        pending = list(range(n))
        active: Dict[int, str] = {}
        while pending or active:
            while pending and len(active) < self.parallelism:
                i = pending.pop(0)
                self.backend.create(manifests[i])
                active[i] = manifests[i]["metadata"]["name"]
                self.created.append(active[i])
            for i, name in list(active.items()):
                job = self.backend.read(name)
                if job is None:
                    raise FanOutError(f"block {i}: its Job {name} no longer exists (deleted outside the WPS)")
                pods = self.backend.pods_of({LABEL_FAN_OUT: _label_value(self.job_id), LABEL_BLOCK: str(i)})
                state, reason = job_state(job, pods)
                if state == FAILED:
                    raise self._failed(f"block {i} in Job {name}", reason, pods)
                if state == SUCCEEDED:
                    del active[i]
            self._report(task_path, n, progress, len(active))
            if pending or active:
                time.sleep(self.poll)


# -- configuration -------------------------------------------------------------------------------
def load_job_spec(path) -> JobSpec:
    """Read a :class:`JobSpec` from the JSON file ``path`` (keys are its field names; the Helm
    chart renders this file from ``wps.jobs`` values).

    Raises
    ------
    ParameterError
        If the file is missing, is not JSON, has unknown keys or invalid values.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"kubernetes_job_spec: no such file {path}") from None
    except ValueError as exc:
        raise ParameterError(f"kubernetes_job_spec {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ParameterError(f"kubernetes_job_spec {path}: expected a JSON object")
    unknown = sorted(set(data) - set(JobSpec.__dataclass_fields__))
    if unknown:
        raise ParameterError(f"kubernetes_job_spec {path}: unknown key(s) {', '.join(unknown)}")
    try:
        return JobSpec(**data)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"kubernetes_job_spec {path}: {exc}") from None


def backend_for(settings) -> KubernetesJobBackend:
    """The :class:`KubernetesJobBackend` of a server's settings (one per process and settings).

    The API is reached with ``settings.kubernetes_config``: a kubeconfig path, or (empty) the
    pod's ServiceAccount when running in a cluster, else ``$KUBECONFIG`` / ``~/.kube/config``.

    Raises
    ------
    ParameterError
        If the job spec or the Kubernetes configuration cannot be loaded.
    """
    key = (os.getpid(), str(settings.kubernetes_job_spec), settings.kubernetes_config)
    if key in _BACKENDS:
        return _BACKENDS[key]
    # imported here: the kubernetes client is loaded only with backend = kubernetes
    from kubernetes import client, config

    spec = load_job_spec(settings.kubernetes_job_spec)
    conf = client.Configuration()
    try:
        if settings.kubernetes_config:
            config.load_kube_config(config_file=settings.kubernetes_config, client_configuration=conf)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=conf)
        else:
            config.load_kube_config(client_configuration=conf)
    except Exception as exc:  # ConfigException, missing files, bad YAML
        where = settings.kubernetes_config or "the in-cluster ServiceAccount / $KUBECONFIG"
        raise ParameterError(f"kubernetes_config: cannot load {where}: {exc}") from None
    api = client.ApiClient(conf)
    backend = KubernetesJobBackend(spec, str(settings.settings_file), client.BatchV1Api(api), client.CoreV1Api(api),
                                   client.VersionApi(api))
    _BACKENDS[key] = backend
    return backend


_BACKENDS: Dict[Any, KubernetesJobBackend] = {}
