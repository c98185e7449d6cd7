"""geoml-hub on a real Kubernetes cluster, end to end (README.md here; fixtures in conftest.py).

The chart is installed once for the session with the images built from ``images/``; the tests
reach the hub through the proxy pod and look at what it made with the Kubernetes API. They run
in file order, as a lab would live with the release:

a. the release's pods are ready; the hub, the WPS and the map answer through the proxy;
b. the admin signs up (pre-approved as ``hub.adminUsers``); alice and bob sign up and cannot log
   in until the admin approves them;
c. alice starts the CPU profile: a real pod from the notebook image, non-root, a memory
   ``/dev/shm``, her home kept across a server restart and the shared data read-only;
d. in her server, ``geoml_hub.client.Client()`` with her token trains as a ``batch/v1`` Job in the
   CPU image; a cancelled job's Job goes; a job whose pod is deleted ends with a reason;
e. bob is refused the CUDA profile and alice's jobs and outputs; the map renders a scene tile
   for alice;
f. ``helm upgrade`` with a shorter culler timeout rolls the hub and keeps users and jobs; the
   culler then stops alice's idle server but not bob's, whose kernel is busy training;
g. ``helm uninstall`` leaves no pods, Jobs or Services.
"""

from __future__ import annotations

import io
import json
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import Dict, List

import numpy as np
import pytest
import requests

from geoml_hub.client import Client

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(1800)]

HTTP_TIMEOUT = 60
SPAWN_TIMEOUT = 600
STOP_TIMEOUT = 180
TRAIN_TIMEOUT = 900
CANCEL_TIMEOUT = 60

GPU = "nvidia.com/gpu"
RELEASE = "geoml"  # conftest.RELEASE
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
SINGLEUSER = "app.kubernetes.io/component=singleuser-server"
JOB_ID_LABEL = "geoml-hub/job-id"
CHART_COMPONENTS = {"hub", "proxy", "wps", "map", "postgresql"}

# ../shared/data as the WPS names it (data root "data", docs/wps.md) and what it holds (its README.md)
EUROSAT = "data/eurosat_ms"
EUROSAT_FILES = 269
SCENE = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
LABELS = "data/landsat7_chiapas/training_data.gtif"
CLASS_NAMES = "1=forest,2=water,3=herbaceous,4=barren,5=urban"
CHIAPAS_COUNTS = {"forest": 383, "water": 16, "herbaceous": 145, "barren": 106, "urban": 68}
# the Chiapas scene's centre (README of the data: 93.35-93.28 W, 15.69-15.75 N)
CHIAPAS_LON_LAT = (-93.315, 15.72)

# the helm upgrade of section f: a short culler timeout (the activity interval is a quarter of it)
CULL_TIMEOUT = 80
CULL_EVERY = 10
# ... and a short deadline of the WPS's Kubernetes Jobs (activeDeadlineSeconds)
JOB_DEADLINE = 25

# what the tests share, in file order (job ids, pod uids)
STATE: Dict[str, object] = {}


@dataclass
class HubUser:
    """A person of the hub: name, password, a logged-in browser session and an API token."""

    name: str
    password: str
    session: requests.Session
    token: str = ""


def hub_api(hub_url: str, token: str, method: str, path: str, **kw) -> requests.Response:
    """A request to the hub's REST API (``/hub/api<path>``) with ``token``."""
    return requests.request(method, f"{hub_url}/hub/api{path}", headers={"Authorization": f"token {token}"},
                            timeout=HTTP_TIMEOUT, **kw)


def sign_up(hub_url: str, name: str) -> HubUser:
    """NativeAuthenticator's sign-up form, as a person fills it in."""
    password = secrets.token_urlsafe(18)
    s = requests.Session()
    s.get(f"{hub_url}/hub/signup", timeout=HTTP_TIMEOUT).raise_for_status()
    r = s.post(f"{hub_url}/hub/signup", timeout=HTTP_TIMEOUT,
               data={"username": name, "signup_password": password, "signup_password_confirmation": password,
                     "_xsrf": s.cookies.get("_xsrf")})
    assert r.status_code == 200, r.text[-2000:]
    return HubUser(name, password, s)


def log_in(hub_url: str, user: HubUser) -> requests.Response:
    """The login form; a 302 is a successful login (the session then holds the hub's cookie)."""
    user.session.get(f"{hub_url}/hub/login", timeout=HTTP_TIMEOUT)
    return user.session.post(f"{hub_url}/hub/login", allow_redirects=False, timeout=HTTP_TIMEOUT,
                             data={"username": user.name, "password": user.password,
                                   "_xsrf": user.session.cookies.get("_xsrf")})


def new_token(hub_url: str, user: HubUser) -> str:
    """An API token of ``user``, made with the login cookie (the hub's token page does the same)."""
    r = user.session.post(f"{hub_url}/hub/api/users/{user.name}/tokens", json={"note": "tests/cluster"},
                          headers={"X-XSRFToken": user.session.cookies.get("_xsrf")}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def image_ref(spec: dict) -> str:
    """``name:tag`` of an image value ``{name, tag}``."""
    return f"{spec['name']}:{spec['tag']}"


def container(pod_spec, name: str):
    """The container ``name`` of a pod spec."""
    matches = [c for c in pod_spec.containers if c.name == name]
    assert len(matches) == 1, f"no single container {name!r}: {[c.name for c in pod_spec.containers]}"
    return matches[0]


def resources_of(c, kind: str = "limits") -> dict:
    """The resource ``limits`` or ``requests`` of a container (``{}`` when it has none)."""
    return dict((getattr(c.resources, kind) if c.resources else None) or {})


def run_in_pod(cluster, pod_name: str, command: List[str], container_name: str = "notebook",
               timeout: float = 600) -> tuple:
    """``(exit code, stdout + stderr)`` of ``command`` run in a container (``kubectl exec``)."""
    from kubernetes.stream import stream

    resp = stream(cluster.core.connect_get_namespaced_pod_exec, pod_name, cluster.namespace,
                  container=container_name, command=command, stderr=True, stdin=False, stdout=True, tty=False,
                  _preload_content=False)
    out = []
    deadline = time.monotonic() + timeout
    while resp.is_open():
        resp.update(timeout=5)
        out.append(resp.read_stdout())
        out.append(resp.read_stderr())
        if time.monotonic() > deadline:
            resp.close()
            pytest.fail(f"{command} in pod {pod_name} did not end within {timeout:g} s:\n{''.join(out)[-3000:]}")
    resp.close()
    return resp.returncode, "".join(out)


def user_pods(cluster, name: str) -> list:
    return [p for p in cluster.pods(f"{SINGLEUSER},hub.jupyter.org/username={name}")
            if p.metadata.deletion_timestamp is None]


def start_server(cluster, hub_url: str, user: HubUser, profile: str = "cpu"):
    """Start ``user``'s server with ``profile`` (with the user's own token) and return its pod."""
    r = hub_api(hub_url, user.token, "POST", f"/users/{user.name}/server", json={"profile": profile})
    assert r.status_code in (201, 202), r.text

    def ready() -> bool:
        server = hub_api(hub_url, user.token, "GET", f"/users/{user.name}").json()["servers"].get("")
        if server is None:
            pytest.fail(f"{user.name}'s server stopped while starting (the spawn failed)\n{cluster.report()}")
        return server["ready"]

    cluster.wait(ready, SPAWN_TIMEOUT, f"{user.name}'s server ready", interval=3)
    pods = user_pods(cluster, user.name)
    assert len(pods) == 1, f"{len(pods)} pods of {user.name}\n{cluster.report()}"
    return pods[0]


def stop_server(cluster, hub_url: str, user: HubUser) -> None:
    """Stop ``user``'s server and wait until its pod is gone."""
    r = hub_api(hub_url, user.token, "DELETE", f"/users/{user.name}/server")
    assert r.status_code in (202, 204), r.text
    cluster.wait(lambda: "" not in hub_api(hub_url, user.token, "GET", f"/users/{user.name}").json()["servers"],
                 STOP_TIMEOUT, f"{user.name}'s server stopped")
    cluster.wait(lambda: not user_pods(cluster, user.name), STOP_TIMEOUT, f"{user.name}'s pod deleted")


def kubernetes_job(cluster, job_id: str):
    """The ``batch/v1`` Job of WPS job ``job_id``, or ``None``."""
    jobs = cluster.batch.list_namespaced_job(cluster.namespace, label_selector=f"{JOB_ID_LABEL}={job_id}").items
    assert len(jobs) <= 1, f"{len(jobs)} Jobs for WPS job {job_id}"
    return jobs[0] if jobs else None


def running_job_pod(cluster, job_id: str):
    pods = [p for p in cluster.pods(f"{JOB_ID_LABEL}={job_id}")
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    return pods[0] if pods else None


# -- the people ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def admin(cluster, hub_url) -> HubUser:
    """The admin, as a person: sign-up of the name listed in ``hub.adminUsers`` (NativeAuthenticator
    approves it at once), login, and an API token made with the login cookie."""
    user = sign_up(hub_url, cluster.values["hub"]["adminUsers"][0])
    r = log_in(hub_url, user)
    assert r.status_code == 302, f"the admin cannot log in after signing up: HTTP {r.status_code}\n{r.text[-2000:]}"
    user.token = new_token(hub_url, user)
    return user


@pytest.fixture(scope="session")
def people(cluster, hub_url, admin) -> Dict[str, HubUser]:
    """alice and bob: signed up, refused until approved, approved by the admin, logged in, with tokens."""
    found = {}
    for name in ("alice", "bob"):
        user = sign_up(hub_url, name)
        r = log_in(hub_url, user)
        STATE[f"{name}-login-before-approval"] = (r.status_code, r.text)
        # the admin approves on NativeAuthenticator's page (GET /hub/authorize/<name>)
        r = admin.session.get(f"{hub_url}/hub/authorize/{name}", timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text[-2000:]
        r = log_in(hub_url, user)
        assert r.status_code == 302, f"{name} cannot log in after approval: HTTP {r.status_code}\n{r.text[-2000:]}"
        user.token = new_token(hub_url, user)
        found[name] = user
    return found


@pytest.fixture
def alice_wps(cluster, hub_url, people, tmp_path) -> Client:
    """alice's ``geoml_hub.client.Client`` of the WPS behind the hub, from the test machine."""
    assert cluster.shared_data, "the WPS tests need ../shared/data on the cluster (GEOML_CLUSTER_DATA_PV)"
    return Client(f"{hub_url}/services/wps", token=people["alice"].token, progress=False, download_dir=tmp_path)


# -- a. the release ---------------------------------------------------------------------------------------
def test_release_pods_are_ready_and_hub_wps_map_answer(cluster, hub_url):
    pods = [p for p in cluster.pods(INSTANCE) if p.metadata.labels.get("app.kubernetes.io/component")
            not in ("singleuser-server", "wps-job")]
    components = {p.metadata.labels["app.kubernetes.io/component"] for p in pods}
    assert components >= CHART_COMPONENTS, f"{components}\n{cluster.report()}"
    not_ready = [p.metadata.name for p in pods
                 if not any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    assert not not_ready, f"pods not ready: {not_ready}\n{cluster.report()}"
    # every pod of the release runs its image without pulling (imported into the node)
    images = {c.image for p in pods for c in p.spec.containers}
    assert image_ref(cluster.values["hub"]["image"]) in images and image_ref(cluster.values["wps"]["image"]) in images

    r = requests.get(f"{hub_url}/hub/api", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json"), r.text
    assert r.json()["version"]
    # the hub registers the WPS and the map in the proxy once it runs (its health answers a little
    # earlier, while it starts)
    cluster.wait(lambda: requests.get(f"{hub_url}/services/map/health", timeout=HTTP_TIMEOUT).status_code == 200,
                 120, "the map's route in the proxy")
    r = requests.get(f"{hub_url}/services/wps/health", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text


# -- b. sign-up and approval ------------------------------------------------------------------------------
def test_users_sign_up_and_log_in_once_the_admin_approved_them(hub_url, admin, people):
    me = hub_api(hub_url, admin.token, "GET", "/user").json()
    assert me["name"] == admin.name and me["admin"] is True
    for name, user in people.items():
        status, page = STATE[f"{name}-login-before-approval"]
        assert status in (200, 403), f"{name} logged in before approval (HTTP {status})"
        # the chart's NativeAuthenticator (geoml_hub.hub.auth) says the approval is pending (issue 16)
        assert "waiting for an administrator&#39;s approval" in page or \
            "waiting for an administrator's approval" in page, page[-1500:]
        info = hub_api(hub_url, user.token, "GET", "/user").json()
        assert info["name"] == name and info["admin"] is False


# -- c. a CPU notebook server -----------------------------------------------------------------------------
def test_cpu_server_is_a_non_root_pod_with_a_kept_home_and_read_only_data(cluster, hub_url, people):
    alice = people["alice"]
    pod = start_server(cluster, hub_url, alice, "cpu")
    # through the proxy into her server, with her own token
    r = requests.get(f"{hub_url}/user/alice/api/status", headers={"Authorization": f"token {alice.token}"},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[-2000:]

    assert pod.status.phase == "Running"
    nb = container(pod.spec, "notebook")
    cpu_profile = next(p for p in cluster.values["singleuser"]["profileList"] if p["slug"] == "cpu")
    assert nb.image == cpu_profile["kubespawner_override"]["image"]
    env = {e.name: e.value for e in nb.env or []}
    assert env.get("GEOML_DEVICE") == "cpu"
    assert GPU not in resources_of(nb, "limits") and GPU not in resources_of(nb, "requests")
    shm = [m for m in nb.volume_mounts if m.mount_path == "/dev/shm"]
    assert len(shm) == 1, [m.mount_path for m in nb.volume_mounts]
    volume = next(v for v in pod.spec.volumes if v.name == shm[0].name)
    assert volume.empty_dir is not None and volume.empty_dir.medium == "Memory"
    csc, psc = nb.security_context, pod.spec.security_context
    uid = (csc.run_as_user if csc else None) or (psc.run_as_user if psc else None)
    assert uid not in (None, 0)
    assert (csc and csc.run_as_non_root) or (psc and psc.run_as_non_root)
    assert csc is not None and csc.allow_privilege_escalation is False
    rc, out = run_in_pod(cluster, pod.metadata.name, ["sh", "-c", "id -u; stat -f -c %T /dev/shm"])
    assert rc == 0 and out.split() == [str(uid), "tmpfs"], out

    # the shared data: readable, and a write fails on the read-only mount
    data_volume = next(v.name for v in pod.spec.volumes
                       if v.persistent_volume_claim and v.persistent_volume_claim.claim_name == cluster.data_claim)
    data = next(m.mount_path for m in nb.volume_mounts if m.name == data_volume)
    rc, out = run_in_pod(cluster, pod.metadata.name, ["sh", "-c", f"ls {data}/eurosat_ms/Forest | wc -l"])
    assert rc == 0 and out.split() == ["30"], out
    rc, out = run_in_pod(cluster, pod.metadata.name, ["touch", f"{data}/written-by-alice"])
    assert rc != 0 and "Read-only file system" in out, out

    # her home is a volume: a file written there is back after the server restarts in a new pod
    marker = secrets.token_hex(8)
    rc, out = run_in_pod(cluster, pod.metadata.name, ["sh", "-c", f"echo {marker} > ~/kept.txt"])
    assert rc == 0, out
    first_uid = pod.metadata.uid
    stop_server(cluster, hub_url, alice)
    pod = start_server(cluster, hub_url, alice, "cpu")
    assert pod.metadata.uid != first_uid
    rc, out = run_in_pod(cluster, pod.metadata.name, ["cat", f"{nb.working_dir or '/home/jovyan'}/kept.txt"])
    assert rc == 0 and out.strip() == marker, out
    STATE["alice-pod"] = pod.metadata.name


# -- d. WPS jobs as Kubernetes Jobs -------------------------------------------------------------------
TRAIN_IN_NOTEBOOK = """
import json
from geoml_hub.client import Client
wps = Client(progress=False)          # GEOML_WPS_URL and JUPYTERHUB_API_TOKEN of the server
ext = wps.extract_samples(scene="{scene}", reference="{labels}", class_names="{names}")
job = wps.train_model(samples="{samples}", family="cnn", epochs=3, device="cpu", wait=False)
print(json.dumps({{"job": job.job_id, "extract": ext.job_id, "classes": ext.class_counts}}))
"""

DOWNLOAD_IN_NOTEBOOK = """
import json
from geoml_hub.client import Client
result = Client(progress=False).job("{job}").result()
print(json.dumps({{"model": str(result.model), "bytes": result.model.stat().st_size,
                   "epochs": result.epochs_run, "device": result.device, "n": result.n_train + result.n_val}}))
"""


def test_training_from_alice_notebook_runs_as_a_kubernetes_job(cluster, alice_wps):
    pod = STATE["alice-pod"]
    script = TRAIN_IN_NOTEBOOK.format(scene=SCENE, labels=LABELS, names=CLASS_NAMES, samples=EUROSAT)
    rc, out = run_in_pod(cluster, pod, ["python", "-c", script])
    assert rc == 0, out
    submitted = json.loads(out.strip().splitlines()[-1])
    # a process that stays in the WPS pod, on the real scene of the shared data
    assert submitted["classes"] == CHIAPAS_COUNTS
    assert kubernetes_job(cluster, submitted["extract"]) is None  # not in kubernetes_processes: local
    job_id = submitted["job"]
    STATE["alice-job"] = job_id

    k8s_job = cluster.wait(lambda: kubernetes_job(cluster, job_id), 120,
                           f"a Kubernetes Job labelled {JOB_ID_LABEL}={job_id}")
    worker = k8s_job.spec.template.spec.containers[0]
    assert worker.image == image_ref(cluster.values["wps"]["jobs"]["cpuImage"])
    assert GPU not in resources_of(worker, "limits")

    # progress as the job pod reports it through the job database (PostgreSQL) and the status document
    seen = set()

    def finished():
        record = alice_wps.job(job_id).info()
        seen.add(record["percent"])
        if record["status"] in ("failed", "dismissed"):
            pytest.fail(f"WPS job {job_id} {record['status']}: {record.get('message')}\n{cluster.report()}")
        return record["status"] == "succeeded" and record

    record = cluster.wait(finished, TRAIN_TIMEOUT, f"WPS job {job_id} succeeded", interval=1)
    assert record["percent"] == 100
    steps = {p for p in seen if p is not None and 0 < p < 100}
    assert len(steps) >= 2, f"progress seen: {sorted(p for p in seen if p is not None)}"

    # the model downloads in her server
    rc, out = run_in_pod(cluster, pod, ["python", "-c", DOWNLOAD_IN_NOTEBOOK.format(job=job_id)])
    assert rc == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bytes"] > 0 and result["epochs"] == 3 and result["device"] == "cpu"
    assert result["n"] == EUROSAT_FILES
    # the worker records the final state before its pod exits: the Job completes just after
    name = k8s_job.metadata.name
    cluster.wait(lambda: (kubernetes_job(cluster, job_id) is None
                          or cluster.batch.read_namespaced_job(name, cluster.namespace).status.succeeded == 1), 120,
                 f"Job {name} complete")


def test_cancel_deletes_the_kubernetes_job(cluster, alice_wps):
    job = alice_wps.train_model(samples=EUROSAT, family="cnn", epochs=500, val_fraction=0.0, device="cpu", wait=False)
    k8s_job = cluster.wait(lambda: kubernetes_job(cluster, job.job_id), 120,
                           f"a Kubernetes Job labelled {JOB_ID_LABEL}={job.job_id}")
    cluster.wait(lambda: running_job_pod(cluster, job.job_id), 300, f"the pod of Job {k8s_job.metadata.name} running")
    cluster.wait(lambda: job.info()["status"] == "running", 60, f"WPS job {job.job_id} running")

    assert alice_wps.cancel(job.job_id) is True
    cluster.wait(lambda: kubernetes_job(cluster, job.job_id) is None and not cluster.pods(
        f"{JOB_ID_LABEL}={job.job_id}"), CANCEL_TIMEOUT, f"Job {k8s_job.metadata.name} and its pod deleted",
        interval=1)
    assert job.info()["status"] == "dismissed"
    assert job.status().state == "dismissed"


def test_a_deleted_job_pod_is_replaced_and_the_job_runs_again(cluster, alice_wps):
    """``kubectl delete pod`` of a running job: the Job controller starts a new pod (a deleted pod
    does not count against ``backoffLimit``) and the job runs again from the start there (every
    process only writes its job's directories, so a rerun is safe); it never hangs."""
    job = alice_wps.train_model(samples=EUROSAT, family="cnn", epochs=500, val_fraction=0.0, device="cpu", wait=False)
    first = cluster.wait(lambda: running_job_pod(cluster, job.job_id), 300, f"the pod of WPS job {job.job_id} running")
    cluster.wait(lambda: (r := job.info())["status"] == "running" and r["percent"] > 0, 120,
                 f"WPS job {job.job_id} running with progress")
    assert job.info()["attempts"] == 1
    cluster.core.delete_namespaced_pod(first.metadata.name, cluster.namespace)

    second = cluster.wait(lambda: (p := running_job_pod(cluster, job.job_id)) and p.metadata.name != first.metadata.name
                          and p, 180, f"a new pod of WPS job {job.job_id} after {first.metadata.name} was deleted")
    # the worker in the new pod runs the job again, as its second attempt
    record = cluster.wait(lambda: (r := job.info())["attempts"] == 2 and r, 180,
                          f"WPS job {job.job_id} started again in pod {second.metadata.name}")
    assert record["status"] == "running", record
    assert alice_wps.cancel(job.job_id) is True
    cluster.wait(lambda: kubernetes_job(cluster, job.job_id) is None, CANCEL_TIMEOUT, "the Job deleted by the cancel")
    assert job.info()["status"] == "dismissed"


def test_a_job_deleted_outside_the_wps_fails_the_job_with_its_reason(cluster, alice_wps):
    """``kubectl delete job``: the WPS job fails and says the Job no longer exists."""
    job = alice_wps.train_model(samples=EUROSAT, family="cnn", epochs=500, val_fraction=0.0, device="cpu", wait=False)
    k8s_job = cluster.wait(lambda: kubernetes_job(cluster, job.job_id), 120, f"the Job of WPS job {job.job_id}")
    cluster.wait(lambda: job.info()["status"] == "running", 120, f"WPS job {job.job_id} running")
    cluster.batch.delete_namespaced_job(k8s_job.metadata.name, cluster.namespace, propagation_policy="Background")
    record = cluster.wait(lambda: (r := job.info())["status"] != "running" and r, 120,
                          f"WPS job {job.job_id} ended after its Job was deleted")
    assert record["status"] == "failed" and "no longer exists" in record["message"], record


FAN_OUT_LABEL = "geoml-hub/fan-out-of"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data


def test_a_large_classification_fans_out_over_block_pods_and_matches_one_process(cluster, alice_wps, tmp_path):
    """Issue 14: with ``wps.jobs.fanOut`` parallelism 2 and a size the Chiapas scene passes, a
    classify_scene job runs its 2 row-blocks in 2 pods (Kubernetes 1.20 has no Indexed Jobs: one
    Job per block with ``JOB_COMPLETION_INDEX`` in its environment), the WPS assembles a
    Cloud-Optimized GeoTIFF, and it equals a single-process classification of the same model here,
    pixel for pixel; the QC of it fans out too and its fused matrix equals the single-process QC."""
    from geoml_hub.classification import classify_scene
    from geoml_hub.validation import validate_classification
    import rasterio

    fan = cluster.values["wps"]["jobs"]["fanOut"]
    assert fan["parallelism"] == 2 and 0 < fan["minPixels"] <= 250 * 250
    version = cluster.version()
    ext = alice_wps.extract_samples(scene=SCENE, reference=LABELS, class_names=CLASS_NAMES)
    trained = alice_wps.train_model(samples=ext.dataset("samples"), family="cnn", epochs=2, device="cpu")
    job = alice_wps.classify_scene(model=trained.dataset("model"), scene=SCENE, tile_size=64, device="cpu", wait=False)

    jobs, pods, steps = {}, {}, set()

    def finished():
        for j in cluster.batch.list_namespaced_job(cluster.namespace,
                                                   label_selector=f"{FAN_OUT_LABEL}={job.job_id}").items:
            env = {e.name: e.value for e in j.spec.template.spec.containers[0].env}
            jobs[j.metadata.name] = env.get("JOB_COMPLETION_INDEX")
        for p in cluster.pods(f"{FAN_OUT_LABEL}={job.job_id}"):
            pods[p.metadata.name] = p.status.phase
        record = job.info()
        steps.add(record["percent"])
        if record["status"] in ("failed", "dismissed"):
            pytest.fail(f"WPS job {job.job_id} {record['status']}: {record.get('message')}\n{cluster.report()}")
        return record["status"] == "succeeded" and record

    t0 = time.monotonic()
    cluster.wait(finished, TRAIN_TIMEOUT, f"fan-out WPS job {job.job_id} succeeded", interval=0.5)
    STATE["fan-out-seconds"] = time.monotonic() - t0
    base = f"geoml-wps-{job.job_id}"
    if version < (1, 22):  # the fallback: one Job per block, its index in the environment
        assert jobs == {f"{base}-b0": "0", f"{base}-b1": "1"}, (jobs, pods)
    else:
        assert list(jobs) == [f"{base}-blocks"], jobs
    assert len(pods) >= 2, pods
    assert kubernetes_job(cluster, job.job_id) is None  # the coordinating worker ran in the WPS pod
    cluster.wait(lambda: not cluster.batch.list_namespaced_job(
        cluster.namespace, label_selector=f"{FAN_OUT_LABEL}={job.job_id}").items, 60, "the block Jobs removed")
    assert any(p is not None and 0 < p < 100 for p in steps), steps

    result = job.result()
    assembled = result.path("classification")
    model = trained.path("model")
    ref = classify_scene(model, SHARED_DATA / SCENE.removeprefix("data/"), tmp_path / "ref.tif", tile_size=64,
                         device="cpu")
    with rasterio.open(assembled) as a, rasterio.open(ref.path) as b:
        cls, single = a.read(1), b.read(1)
        assert a.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert a.colormap(1) == b.colormap(1) and a.tags()["CLASS_NAMES"] == b.tags()["CLASS_NAMES"]
        assert a.nodata == 255 and a.transform == b.transform and a.crs == b.crs
    assert np.array_equal(cls, single), f"{int((cls != single).sum())} of {cls.size} pixels differ"
    assert len(np.unique(cls)) >= 2
    STATE["fan-out-identical"] = True

    # QC of the assembled classification: per-block confusion counts in 2 pods, fused in the WPS
    qc_job = alice_wps.validate_classification(classification=result.dataset("classification"), reference=LABELS,
                                               wait=False)
    qc_jobs = set()

    def qc_done():
        qc_jobs.update(j.metadata.name for j in cluster.batch.list_namespaced_job(
            cluster.namespace, label_selector=f"{FAN_OUT_LABEL}={qc_job.job_id}").items)
        record = qc_job.info()
        if record["status"] in ("failed", "dismissed"):
            pytest.fail(f"QC job {qc_job.job_id} {record['status']}: {record.get('message')}")
        return record["status"] == "succeeded"

    t0 = time.monotonic()
    cluster.wait(qc_done, TRAIN_TIMEOUT, f"fan-out QC job {qc_job.job_id} succeeded", interval=0.5)
    # the figures of docs/benchmarks.md, section 11 (shown with pytest -rP)
    print(f"fan-out on Kubernetes {version[0]}.{version[1]}: classify_scene 250x250 in 2 blocks "
          f"{STATE['fan-out-seconds']:.1f} s (submission to succeeded), QC in 2 blocks {time.monotonic() - t0:.1f} s")
    assert len(qc_jobs) == (2 if version < (1, 22) else 1), qc_jobs
    fused = qc_job.result()
    one = validate_classification(ref.path, SHARED_DATA / LABELS.removeprefix("data/"))
    assert fused.overall_accuracy == one["overall_accuracy"] and fused.kappa == one["kappa"] and fused.n == one["n"]


# -- e. other users -------------------------------------------------------------------------------------
def test_bob_is_refused_the_cuda_profile_and_alice_s_jobs(cluster, hub_url, people):
    bob = people["bob"]
    r = hub_api(hub_url, bob.token, "POST", "/users/bob/server", json={"profile": "cuda-gpu"})
    assert r.status_code == 403, r.text
    assert "gpu-users" in r.text, r.text
    assert not user_pods(cluster, "bob")

    job_id = STATE["alice-job"]
    wps = f"{hub_url}/services/wps"
    auth = {"Authorization": f"token {bob.token}"}
    r = requests.get(f"{wps}/jobs/{job_id}", headers=auth, timeout=HTTP_TIMEOUT)
    assert r.status_code in (403, 404), r.text
    alice = requests.get(f"{wps}/jobs/{job_id}", headers={"Authorization": f"token {people['alice'].token}"},
                         timeout=HTTP_TIMEOUT)
    assert alice.status_code == 200, alice.text
    outputs = [o["href"] for o in (alice.json().get("outputs") or []) if o.get("href")]
    status_url = alice.json().get("status_location") or alice.json().get("statusLocation")
    for url in outputs + ([status_url] if status_url else []):
        # the WPS names its public URL (the proxy's Service in the cluster): the same path here
        r = requests.get(f"{hub_url}{urlsplit(url).path}", headers=auth, timeout=HTTP_TIMEOUT)
        assert r.status_code in (403, 404), f"bob read {url}: HTTP {r.status_code}"


def test_the_map_renders_a_scene_tile_for_alice(hub_url, people):
    from PIL import Image

    s = people["alice"].session
    # the map's OAuth login with the hub's cookie, as the browser does it
    r = s.get(f"{hub_url}/services/map/", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and "leaflet" in r.text.lower(), r.text[-1500:]
    layers = s.get(f"{hub_url}/services/map/api/layers", timeout=HTTP_TIMEOUT)
    assert layers.status_code == 200, layers.text
    names = [layer["dataset"] for layer in layers.json()["layers"]]
    assert SCENE in names, names
    zoom = 14
    lon, lat = CHIAPAS_LON_LAT
    n = 2 ** zoom
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    r = s.get(f"{hub_url}/services/map/api/tiles/{zoom}/{x}/{y}.png", params={"dataset": SCENE},
              timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", r.text[:500]
    tile = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))
    assert tile.shape == (256, 256, 4)
    assert (tile[..., 3] > 0).mean() > 0.9 and tile[..., :3].std() > 5, "an empty or flat tile"
    # without the login the map sends the browser to the hub
    r = requests.get(f"{hub_url}/services/map/api/layers", allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code in (302, 401, 403), r.status_code


# -- f. upgrade and the idle culler -------------------------------------------------------------------
def test_helm_upgrade_rolls_the_hub_and_keeps_users_and_jobs(cluster, hub_url, admin, people):
    hub_pods = cluster.pods(f"{INSTANCE},app.kubernetes.io/component=hub")
    before = {p.metadata.uid for p in hub_pods}
    cluster.upgrade({"cull": {"timeout": CULL_TIMEOUT, "every": CULL_EVERY},
                     "wps": {"jobs": {"activeDeadlineSeconds": JOB_DEADLINE}}})

    after = [p for p in cluster.pods(f"{INSTANCE},app.kubernetes.io/component=hub")
             if p.metadata.deletion_timestamp is None]
    assert after and not {p.metadata.uid for p in after} & before, "the hub pod was not replaced"
    cluster.wait(lambda: requests.get(f"{hub_url}/hub/api", timeout=HTTP_TIMEOUT).status_code == 200, 120,
                 "the new hub answers")
    users = {u["name"] for u in hub_api(hub_url, admin.token, "GET", "/users").json()}
    assert users >= {admin.name, "alice", "bob"}
    # alice's token and her jobs (in PostgreSQL) survive the upgrade
    r = requests.get(f"{hub_url}/services/wps/jobs/{STATE['alice-job']}",
                     headers={"Authorization": f"token {people['alice'].token}"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    # her server kept running across the hub's restart (cleanup_servers = False)
    assert user_pods(cluster, "alice")


def test_a_job_past_its_deadline_fails_with_the_reason_and_keeps_its_log(cluster, alice_wps):
    job = alice_wps.train_model(samples=EUROSAT, family="cnn", epochs=500, val_fraction=0.0, device="cpu", wait=False)
    k8s_job = cluster.wait(lambda: kubernetes_job(cluster, job.job_id), 120, f"the Job of WPS job {job.job_id}")
    assert k8s_job.spec.active_deadline_seconds == JOB_DEADLINE
    record = cluster.wait(lambda: (r := job.info())["status"] not in ("queued", "running") and r,
                          JOB_DEADLINE + 240, f"WPS job {job.job_id} ended at its deadline")
    assert record["status"] == "failed", record
    assert f"DeadlineExceeded, activeDeadlineSeconds={JOB_DEADLINE}" in record["message"], record
    # the pod's log is kept beside the WPS's own log of the job
    wps_pod = [p for p in cluster.pods(f"{INSTANCE},app.kubernetes.io/component=wps")
               if p.status.phase == "Running" and p.metadata.deletion_timestamp is None][0]
    rc, out = run_in_pod(cluster, wps_pod.metadata.name, ["cat", f"logs/{job.job_id}.log"],
                         container_name=wps_pod.spec.containers[0].name)
    assert rc == 0 and "--- Kubernetes pod log ---" in out, out[-2000:]


BUSY_KERNEL = """
import time, torch
net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))
end = time.time() + {seconds}
while time.time() < end:
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
    time.sleep(0.05)
"""


async def _execute_quietly(hub_url: str, user: HubUser, kernel_id: str, code: str) -> None:
    """Send ``code`` to a kernel over Jupyter's websocket and return once it runs (busy)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws_url = hub_url.replace("http://", "ws://") + f"/user/{user.name}/api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {user.token}"}))
    msg_id = secrets.token_hex(8)
    await conn.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": user.name, "session": secrets.token_hex(8), "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msg = json.loads(await conn.read_message())
        if (msg.get("parent_header", {}).get("msg_id") == msg_id and msg.get("msg_type") == "status"
                and msg["content"].get("execution_state") == "busy"):
            conn.close()
            return
    raise AssertionError("the kernel did not start the training")


def test_idle_culler_stops_an_idle_server_but_not_a_busy_training_kernel(cluster, hub_url, admin, people):
    import asyncio

    alice, bob = people["alice"], people["bob"]
    # alice's server idles since section d: the culler may have stopped it already (during the
    # deadline test); then she starts it again and leaves it idle
    def settled():  # not in the middle of a stop by the culler
        model = hub_api(hub_url, admin.token, "GET", "/users/alice").json()
        server = model["servers"].get("")
        return not model.get("pending") and (server is None or not server.get("pending"))

    cluster.wait(settled, STOP_TIMEOUT, "alice's server running or stopped, not between")
    if "" not in hub_api(hub_url, admin.token, "GET", "/users/alice").json()["servers"]:
        cluster.wait(lambda: not user_pods(cluster, "alice"), STOP_TIMEOUT, "alice's culled pod deleted")
        start_server(cluster, hub_url, alice, "cpu")
    bob_pod = start_server(cluster, hub_url, bob, "cpu")
    r = requests.post(f"{hub_url}/user/bob/api/kernels", json={"name": "python3"},
                      headers={"Authorization": f"token {bob.token}"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    busy_for = 4 * CULL_TIMEOUT + 60
    asyncio.run(_execute_quietly(hub_url, bob, r.json()["id"], BUSY_KERNEL.format(seconds=busy_for)))
    busy_since = time.monotonic()

    def servers(user: HubUser) -> dict:
        return hub_api(hub_url, admin.token, "GET", f"/users/{user.name}").json()["servers"]

    cluster.wait(lambda: "" not in servers(alice), CULL_TIMEOUT * 3 + 60, "the culler stopped alice's idle server",
                 interval=5)
    cluster.wait(lambda: not user_pods(cluster, "alice"), STOP_TIMEOUT, "alice's pod deleted by the culler")
    # bob's kernel computes without a message: only geoml_hub.hub.busy_activity keeps it alive;
    # stay until more than twice the timeout has passed since it started
    while time.monotonic() - busy_since < 2 * CULL_TIMEOUT + 2 * CULL_EVERY:
        assert "" in servers(bob), "the culler stopped bob's server while its kernel was training"
        time.sleep(5)
    pods = user_pods(cluster, "bob")
    assert [p.metadata.uid for p in pods] == [bob_pod.metadata.uid]
    stop_server(cluster, hub_url, bob)


# -- g. uninstall --------------------------------------------------------------------------------------
def test_helm_uninstall_leaves_no_pods_jobs_or_services(cluster, admin, hub_url):
    for user in hub_api(hub_url, admin.token, "GET", "/users").json():
        assert not user["servers"], f"{user['name']} still has a server"
    cluster.uninstall()
    cluster.wait(lambda: not cluster.core.list_namespaced_pod(cluster.namespace).items, 300,
                 "every pod of the namespace gone")
    assert not cluster.batch.list_namespaced_job(cluster.namespace).items
    assert not cluster.core.list_namespaced_service(cluster.namespace).items
    # kept on purpose (docs/admin.md): the users' homes (KubeSpawner's claims), the shared results
    # (helm.sh/resource-policy: keep) and PostgreSQL's data (a StatefulSet's claims)
    left = sorted(c.metadata.name for c in cluster.core.list_namespaced_persistent_volume_claim(cluster.namespace).items)
    kept = {"claim-alice", "claim-bob", f"{RELEASE}-geoml-hub-results", f"data-{RELEASE}-geoml-hub-postgresql-0",
            "geoml-test-data"}
    assert set(left) <= kept, left
