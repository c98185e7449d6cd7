"""Fixtures of the end-to-end tests on a real Kubernetes cluster (see README.md here).

Every test in this folder is skipped unless ``KUBECONFIG`` names a reachable cluster and
``GEOML_CLUSTER_IMAGE_PREFIX`` names the registry prefix where the four images were pushed.
The session then installs the chart ``helm/geoml-hub`` as release ``geoml`` into a new
namespace ``geoml-test-<random>`` with ``.ci/bin/helm``, and reaches the hub through a port
forward to the proxy pod made with the ``kubernetes`` client (kubectl is not needed).

Environment
-----------
KUBECONFIG
    Kubeconfig file(s) of the cluster (required).
GEOML_CLUSTER_IMAGE_PREFIX
    Registry prefix of the images (required), e.g. ``localhost:5001/geoml`` for
    ``localhost:5001/geoml/geoml-hub/hub``.
GEOML_CLUSTER_IMAGE_TAG
    Tag of the images (default: the chart's ``appVersion``).
GEOML_CLUSTER_STORAGE_CLASS
    Storage class of the chart's PersistentVolumeClaims (default: the cluster's default class).
GEOML_CLUSTER_RWX_STORAGE_CLASS
    Storage class of the two ReadWriteMany claims, the WPS outputs (shared with the job pods)
    and the results (default: ``GEOML_CLUSTER_STORAGE_CLASS``).
GEOML_CLUSTER_DATA_PV
    A PersistentVolume (reclaim policy Retain) holding a copy of ``../shared/data``; the
    session binds it to a claim in its namespace. Unset: the WPS tests are skipped.
GEOML_CLUSTER_VALUES
    An extra values file given to helm after the test's own (to adapt the release to the
    cluster, e.g. smaller WPS job resources).
GEOML_CLUSTER_KEEP
    ``1``: keep the release and its namespace after the session, to look around.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "geoml-hub"
HELM = ROOT / ".ci" / "bin" / "helm"
RELEASE = "geoml"
ADMIN = "admin"
DATA_CLAIM = "geoml-test-data"
PROXY_PORT = 8000  # configurable-http-proxy's public port in the proxy pod (templates/proxy/deployment.yaml)
PROBE_TIMEOUT = 10.0
HELM_WAIT = "10m"
HELM_TIMEOUT = 720  # seconds: helm's own --wait plus time to render and apply

LOGGER = logging.getLogger("geoml_hub.tests.cluster")


# -- settings and the skip -----------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterSettings:
    """What the environment says about the cluster and the images (see the module docstring)."""

    image_prefix: str
    image_tag: str
    storage_class: str
    rwx_storage_class: str
    data_pv: str
    extra_values: str
    keep: bool


def _cluster_problem() -> Optional[str]:
    """Why ``KUBECONFIG`` gives no usable cluster, or ``None`` when the API server answered."""
    value = os.environ.get("KUBECONFIG", "")
    if not value:
        return "KUBECONFIG is not set: these tests need a reachable Kubernetes cluster (tests/cluster/README.md)"
    missing = [p for p in value.split(os.pathsep) if p and not Path(p).expanduser().is_file()]
    if missing:
        return f"KUBECONFIG names missing file(s): {', '.join(missing)}"
    outcome: Dict[str, str] = {}

    def probe() -> None:
        try:
            from kubernetes import client, config

            config.load_kube_config()
            outcome["version"] = client.VersionApi().get_code(_request_timeout=PROBE_TIMEOUT).git_version
        except Exception as exc:  # whatever fails, there is no usable cluster
            outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]

    # a thread bounds the probe: urllib3 retries a refused connection on its own
    thread = threading.Thread(target=probe, name="kubernetes probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT)
    if "version" in outcome:
        return None
    why = outcome.get("error", f"no answer within {PROBE_TIMEOUT:g} s")
    return f"the cluster of KUBECONFIG={value} is not reachable: {why}"


def _settings() -> Tuple[Optional[ClusterSettings], str]:
    """The settings, or ``None`` and the reason to skip."""
    problem = _cluster_problem()
    if problem:
        return None, problem
    prefix = os.environ.get("GEOML_CLUSTER_IMAGE_PREFIX", "").strip().rstrip("/")
    if not prefix:
        return None, ("GEOML_CLUSTER_IMAGE_PREFIX is not set: the registry prefix where the hub, wps, "
                      "notebook-cpu and notebook-cuda images were pushed, e.g. localhost:5001/geoml "
                      "(tests/cluster/README.md)")
    tag = os.environ.get("GEOML_CLUSTER_IMAGE_TAG", "").strip()
    if not tag:
        tag = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
    storage_class = os.environ.get("GEOML_CLUSTER_STORAGE_CLASS", "").strip()
    settings = ClusterSettings(
        image_prefix=prefix, image_tag=tag, storage_class=storage_class,
        rwx_storage_class=os.environ.get("GEOML_CLUSTER_RWX_STORAGE_CLASS", "").strip() or storage_class,
        data_pv=os.environ.get("GEOML_CLUSTER_DATA_PV", "").strip(),
        extra_values=os.environ.get("GEOML_CLUSTER_VALUES", "").strip(),
        keep=os.environ.get("GEOML_CLUSTER_KEEP", "") == "1")
    return settings, ""


@pytest.fixture(scope="session", autouse=True)
def cluster_settings() -> ClusterSettings:
    """The cluster settings; skips every test of this folder without a cluster or images.

    ``GEOML_CLUSTER_SKIP`` (set by ``run.sh`` on a machine that cannot start the kit) is the
    reason to skip; with ``GEOML_CLUSTER_REQUIRED=1`` (set by ``run.sh`` once its cluster is up)
    a missing cluster fails instead of skipping.
    """
    forced = os.environ.get("GEOML_CLUSTER_SKIP", "").strip()
    if forced:
        pytest.skip(forced)
    settings, reason = _settings()
    if settings is None:
        if os.environ.get("GEOML_CLUSTER_REQUIRED") == "1":
            pytest.fail(f"GEOML_CLUSTER_REQUIRED=1 but {reason}")
        pytest.skip(reason)
    return settings


# -- the chart's values ----------------------------------------------------------------------------
def _image_name(ref: str) -> str:
    """``name`` of an image reference ``name:tag`` (a registry port is not a tag)."""
    name, _, tag = ref.rpartition(":")
    return name if name and "/" not in tag else ref


def chart_values(settings: ClusterSettings, data_claim: str) -> Dict[str, Any]:
    """Values of the test release: the chart's default image names under the registry prefix,
    the default profiles with their images rewritten, WPS jobs on Kubernetes (with the
    ReadWriteMany outputs volume the chart requires for them), and storage classes.

    Parameters
    ----------
    settings : ClusterSettings
    data_claim : str
        The claim holding ``../shared/data`` in the release namespace ("": no shared data).

    Returns
    -------
    dict
        Values for ``helm -f`` (every image with an explicit tag).
    """
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def image(name: str) -> Dict[str, str]:
        return {"name": f"{settings.image_prefix}/{name}", "tag": settings.image_tag}

    # singleuser.profileList replaces the whole list (docs/admin.md): copy the default profiles
    # (the chart's files/profiles.yaml), change the images
    profiles = yaml.safe_load((CHART / "files" / "profiles.yaml").read_text())
    for profile in profiles:
        override = profile.get("kubespawner_override") or {}
        if "image" in override:
            spec = image(_image_name(override["image"]))
            override["image"] = f"{spec['name']}:{spec['tag']}"
    jobs = defaults["wps"]["jobs"]
    # storage classes "" are the cluster's default class
    values: Dict[str, Any] = {
        "hub": {"image": image(defaults["hub"]["image"]["name"]), "adminUsers": [ADMIN],
                "db": {"pvc": {"storageClassName": settings.storage_class}}},
        "wps": {
            "image": image(defaults["wps"]["image"]["name"]),
            "jobs": {"backend": "kubernetes", "cpuImage": image(jobs["cpuImage"]["name"]),
                     "cudaImage": image(jobs["cudaImage"]["name"]),
                     # the Chiapas scene (250 x 250) fans out over 2 block pods (issue 14)
                     "fanOut": {"minPixels": 50_000, "parallelism": 2}},
            "outputs": {"accessModes": ["ReadWriteMany"], "storageClassName": settings.rwx_storage_class},
        },
        "singleuser": {"image": image(defaults["singleuser"]["image"]["name"]), "profileList": profiles,
                       "storage": {"dynamic": {"storageClass": settings.storage_class}}},
        "storage": {"results": {"storageClassName": settings.rwx_storage_class}},
        "postgresql": {"persistence": {"storageClassName": settings.storage_class}},
    }
    if data_claim:
        values["storage"]["sharedData"] = {"enabled": True, "existingClaim": data_claim}
    return values


# -- the cluster ----------------------------------------------------------------------------------
class Cluster:
    """The test release's namespace with the Kubernetes API clients.

    Attributes
    ----------
    namespace : str
    core : kubernetes.client.CoreV1Api
    batch : kubernetes.client.BatchV1Api
    values : dict
        The values the test gave helm (``chart_values``).
    shared_data : bool
        Whether ``../shared/data`` is mounted (``GEOML_CLUSTER_DATA_PV`` was set).
    """

    def __init__(self, namespace: str):
        from kubernetes import client

        self.namespace = namespace
        self.core = client.CoreV1Api()
        self.batch = client.BatchV1Api()
        self.values: Dict[str, Any] = {}
        self.chart_defaults: Dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
        self.shared_data = False
        self.data_claim = ""
        self.installed = False
        self.helm_env: Dict[str, str] = {}
        self.values_files: List[str] = []

    def upgrade(self, changes: Dict[str, Any]) -> None:
        """``helm upgrade --wait`` of the release with ``changes`` given after the session's values."""
        extra = Path(self.values_files[0]).with_name(f"upgrade-{secrets.token_hex(3)}.yaml")
        extra.write_text(yaml.safe_dump(changes, sort_keys=False))
        args = ["upgrade", RELEASE, str(CHART), "--namespace", self.namespace, "--wait", "--timeout", HELM_WAIT]
        for f in self.values_files + [str(extra)]:
            args += ["-f", f]
        proc = _helm(self.helm_env, *args, timeout=HELM_TIMEOUT)
        if proc.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}\n{self.report()}")
        self.values_files.append(str(extra))

    def uninstall(self) -> None:
        """``helm uninstall`` of the release (fails the test when helm fails)."""
        proc = _helm(self.helm_env, "uninstall", RELEASE, "--namespace", self.namespace, "--wait", "--timeout",
                     HELM_WAIT, timeout=HELM_TIMEOUT)
        if proc.returncode != 0:
            pytest.fail(f"helm uninstall failed:\n{proc.stdout}\n{proc.stderr}\n{self.report()}")
        self.installed = False

    def version(self) -> Tuple[int, int]:
        """``(major, minor)`` of the API server (``/version``)."""
        from kubernetes import client

        info = client.VersionApi().get_code()
        return int("".join(c for c in info.major if c.isdigit())), int("".join(c for c in info.minor if c.isdigit()))

    def pods(self, selector: str) -> List[Any]:
        """Pods of the namespace matching the label ``selector``."""
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def report(self) -> str:
        """Pods (phase, container states) and the latest events of the namespace, for failure messages."""
        lines = [f"namespace {self.namespace}:"]
        try:
            for pod in self.core.list_namespaced_pod(self.namespace).items:
                states = []
                for cs in pod.status.container_statuses or []:
                    if cs.state.waiting:
                        states.append(f"{cs.name} waiting {cs.state.waiting.reason}: {cs.state.waiting.message or ''}")
                    elif cs.state.terminated:
                        states.append(f"{cs.name} terminated {cs.state.terminated.reason} "
                                      f"(exit code {cs.state.terminated.exit_code})")
                    else:
                        states.append(f"{cs.name} running, ready={cs.ready}, restarts={cs.restart_count}")
                lines.append(f"  pod {pod.metadata.name}: {pod.status.phase}; {'; '.join(states)}")
            events = sorted(self.core.list_namespaced_event(self.namespace).items,
                            key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
            for e in events[-25:]:
                lines.append(f"  event {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}")
        except Exception as exc:  # the report explains a failure: it must not replace it
            lines.append(f"  (could not read the namespace: {exc})")
        return "\n".join(lines)

    def wait(self, check: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
        """Call ``check`` until it returns something true, and return that.

        Fails the test after ``timeout`` seconds with ``what`` and :meth:`report`.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:g} s\n{self.report()}")
            time.sleep(interval)

    # -- the shared data volume ------------------------------------------------------------------
    def bind_data_volume(self, pv_name: str) -> str:
        """Bind the PersistentVolume ``pv_name`` to a new claim in the namespace; return the claim's name."""
        from kubernetes.client.exceptions import ApiException

        try:
            pv = self.core.read_persistent_volume(pv_name)
        except ApiException as exc:
            pytest.fail(f"GEOML_CLUSTER_DATA_PV={pv_name}: cannot read the PersistentVolume ({exc.status} {exc.reason})")
        if pv.spec.persistent_volume_reclaim_policy != "Retain":
            pytest.fail(f"PersistentVolume {pv_name} must have persistentVolumeReclaimPolicy Retain, not "
                        f"{pv.spec.persistent_volume_reclaim_policy}: deleting the test namespace releases it")
        if pv.status.phase == "Bound":
            ref = pv.spec.claim_ref
            pytest.fail(f"PersistentVolume {pv_name} is bound to {ref.namespace}/{ref.name}: delete that claim "
                        "(or the namespace of a kept test run) first")
        self._free_data_volume(pv_name)
        self.core.create_namespaced_persistent_volume_claim(self.namespace, {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": DATA_CLAIM},
            "spec": {
                "accessModes": pv.spec.access_modes,
                "storageClassName": pv.spec.storage_class_name or "",  # "" and not the default class
                "volumeName": pv_name,
                "resources": {"requests": {"storage": pv.spec.capacity["storage"]}},
            },
        })
        self.wait(lambda: self.core.read_namespaced_persistent_volume_claim(DATA_CLAIM, self.namespace)
                  .status.phase == "Bound", 60, f"claim {DATA_CLAIM} bound to PersistentVolume {pv_name}")
        return DATA_CLAIM

    def release_data_volume(self, pv_name: str) -> None:
        """After the namespace was deleted: wait until ``pv_name`` is released, make it Available again."""
        self.wait(lambda: self.core.read_persistent_volume(pv_name).status.phase != "Bound", 300,
                  f"PersistentVolume {pv_name} released by the deleted namespace")
        self._free_data_volume(pv_name)

    def _free_data_volume(self, pv_name: str) -> None:
        pv = self.core.read_persistent_volume(pv_name)
        if pv.spec.claim_ref is not None and pv.status.phase != "Bound":
            self.core.patch_persistent_volume(pv_name, {"spec": {"claimRef": None}})


def _helm(env: Dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELM), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cluster(cluster_settings, tmp_path_factory, request) -> Cluster:
    """The chart installed as release ``geoml`` in a new namespace ``geoml-test-<random>``.

    ``helm upgrade --install --wait``: every Deployment and StatefulSet of the chart is ready
    when the tests start. Teardown uninstalls the release and deletes the namespace (not with
    ``GEOML_CLUSTER_KEEP=1``).
    """
    if not HELM.is_file():
        pytest.fail(f"no helm binary at {HELM}: run .ci/install-helm.sh")
    settings = cluster_settings
    tmp = tmp_path_factory.mktemp("cluster")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp / var.lower())
    c = Cluster(f"geoml-test-{secrets.token_hex(3)}")
    c.helm_env = env
    c.core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": c.namespace, "labels": {"app.kubernetes.io/part-of": "geoml-hub-tests"}}})
    try:
        claim = c.bind_data_volume(settings.data_pv) if settings.data_pv else ""
        c.shared_data = bool(claim)
        c.data_claim = claim
        c.values = chart_values(settings, claim)
        values_file = tmp / "values.yaml"
        values_file.write_text(yaml.safe_dump(c.values, sort_keys=False))
        c.values_files = [str(values_file)] + ([settings.extra_values] if settings.extra_values else [])
        args = ["upgrade", "--install", RELEASE, str(CHART), "--namespace", c.namespace,
                "--wait", "--timeout", HELM_WAIT]
        for f in c.values_files:
            args += ["-f", f]
        proc = _helm(env, *args, timeout=HELM_TIMEOUT)
        c.installed = proc.returncode == 0
        if not c.installed:
            pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}\n{c.report()}")
        yield c
    finally:
        if settings.keep:
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"GEOML_CLUSTER_KEEP=1: release {RELEASE} kept in namespace {c.namespace}")
        else:
            _teardown(c, env, settings)


def _teardown(c: Cluster, env: Dict[str, str], settings: ClusterSettings) -> None:
    """Uninstall the release (unless a test did), delete the namespace and free the data volume;
    a failed uninstall fails."""
    from kubernetes.client.exceptions import ApiException

    uninstall = _helm(env, "uninstall", RELEASE, "--namespace", c.namespace, timeout=400) if c.installed else None
    try:
        c.core.delete_namespace(c.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
    if c.shared_data:
        c.release_data_volume(settings.data_pv)
    if uninstall is not None and uninstall.returncode != 0:
        pytest.fail(f"helm uninstall failed:\n{uninstall.stdout}\n{uninstall.stderr}")


# -- reaching the hub ---------------------------------------------------------------------------------
def _pump(src, dst) -> None:
    """Copy bytes from ``src`` to ``dst`` until either side ends; then shut both down, which ends
    the other direction too."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class PodPortForward:
    """``kubectl port-forward`` in threads: connections to ``127.0.0.1:local_port`` reach
    ``port`` of ``pod`` through the Kubernetes API, one port-forward stream per connection.

    Parameters
    ----------
    namespace, pod : str
    port : int
        The pod's port.
    """

    def __init__(self, namespace: str, pod: str, port: int):
        from kubernetes import client

        self.namespace = namespace
        self.pod = pod
        self.port = port
        # its own ApiClient: kubernetes.stream.portforward swaps the client's call_api while it
        # connects, so connections are opened one at a time and never on the tests' client
        self._api = client.CoreV1Api(client.ApiClient())
        self._connect = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.local_port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, name=f"port-forward {pod}:{port}", daemon=True).start()

    def close(self) -> None:
        """Stop accepting connections."""
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        from kubernetes.stream import portforward

        try:
            with self._connect:
                forward = portforward(self._api.connect_get_namespaced_pod_portforward, self.pod, self.namespace,
                                      ports=str(self.port))
            remote = forward.socket(self.port)
            remote.setblocking(True)
        except Exception:  # the client sees the connection closed; the log says why
            LOGGER.exception("port forward to %s/%s:%s failed", self.namespace, self.pod, self.port)
            conn.close()
            return
        back = threading.Thread(target=_pump, args=(remote, conn), daemon=True)
        back.start()
        _pump(conn, remote)
        back.join()
        conn.close()
        remote.close()


@pytest.fixture(scope="session")
def hub_url(cluster) -> str:
    """``http://127.0.0.1:PORT``: the public port of the proxy pod (hub at ``/hub``, WPS at ``/services/wps``)."""
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=proxy"
    running = [p for p in cluster.pods(selector) if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    assert running, f"no running proxy pod ({selector})\n{cluster.report()}"
    forward = PodPortForward(cluster.namespace, running[0].metadata.name, PROXY_PORT)
    yield f"http://127.0.0.1:{forward.local_port}"
    forward.close()
