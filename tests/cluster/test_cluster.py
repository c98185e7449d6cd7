"""geoml-hub on a real Kubernetes cluster, end to end (README.md here; fixtures in conftest.py).

The chart is installed once for the session with the images from
``GEOML_CLUSTER_IMAGE_PREFIX``; the tests reach the hub through the proxy pod and look at
what it made with the Kubernetes API. They run in file order, like an admin setting up a
researcher who starts a notebook server and then trains through the WPS:

a. the chart's pods are ready and the hub and the WPS answer through the proxy;
b. the admin signs up (NativeAuthenticator, pre-approved as ``hub.adminUsers``), creates
   ``alice`` and starts her server with the ``cpu`` profile: her pod has no GPU, a
   memory-backed ``/dev/shm`` and runs as non-root;
c. with ``GEOML_CLUSTER_DATA_PV``: alice's ``train_model`` runs as a ``batch/v1`` Job in the
   CPU image and succeeds, and a cancelled one has its Job deleted.
"""

from __future__ import annotations

import secrets

import pytest
import requests

from geoml_hub.client import Client, WPSError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ALICE = "alice"
HTTP_TIMEOUT = 60
SPAWN_TIMEOUT = 600
STOP_TIMEOUT = 180
TRAIN_TIMEOUT = 900
CANCEL_TIMEOUT = 60

GPU = "nvidia.com/gpu"
INSTANCE = "app.kubernetes.io/instance=geoml"  # the release (conftest.RELEASE)
SINGLEUSER = "app.kubernetes.io/component=singleuser-server"
JOB_ID_LABEL = "geoml-hub/job-id"

# ../shared/data as the WPS names it (data root "data", docs/wps.md) and what it holds (its README.md)
EUROSAT = "data/eurosat_ms"
EUROSAT_FILES = 269
SCENE = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
LABELS = "data/landsat7_chiapas/training_data.gtif"
CLASS_NAMES = "1=forest,2=water,3=herbaceous,4=barren,5=urban"
CHIAPAS_COUNTS = {"forest": 383, "water": 16, "herbaceous": 145, "barren": 106, "urban": 68}


def hub_api(hub_url: str, token: str, method: str, path: str, **kw) -> requests.Response:
    """A request to the hub's REST API (``/hub/api<path>``) with ``token``."""
    return requests.request(method, f"{hub_url}/hub/api{path}", headers={"Authorization": f"token {token}"},
                            timeout=HTTP_TIMEOUT, **kw)


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


@pytest.fixture(scope="session")
def admin_token(cluster, hub_url) -> str:
    """An API token of the admin, got as a person would: sign-up of the name listed in
    ``hub.adminUsers`` (NativeAuthenticator approves it at once), login, then the token API
    with the login cookie."""
    admin = cluster.values["hub"]["adminUsers"][0]
    password = secrets.token_urlsafe(18)
    s = requests.Session()
    s.get(f"{hub_url}/hub/signup", timeout=HTTP_TIMEOUT).raise_for_status()
    r = s.post(f"{hub_url}/hub/signup", timeout=HTTP_TIMEOUT,
               data={"username": admin, "signup_password": password, "signup_password_confirmation": password,
                     "_xsrf": s.cookies.get("_xsrf")})
    assert r.status_code == 200, r.text[-2000:]
    r = s.post(f"{hub_url}/hub/login", data={"username": admin, "password": password, "_xsrf": s.cookies.get("_xsrf")},
               allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 302, f"the admin cannot log in after signing up: HTTP {r.status_code}\n{r.text[-2000:]}"
    r = s.post(f"{hub_url}/hub/api/users/{admin}/tokens", json={"note": "tests/cluster"},
               headers={"X-XSRFToken": s.cookies.get("_xsrf")}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture(scope="session")
def alice_token(hub_url, admin_token) -> str:
    """The user ``alice``, created by the admin, and an API token of hers."""
    r = hub_api(hub_url, admin_token, "POST", f"/users/{ALICE}")
    assert r.status_code == 201, r.text
    r = hub_api(hub_url, admin_token, "POST", f"/users/{ALICE}/tokens", json={"note": "tests/cluster"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture
def wps(cluster, hub_url, alice_token, tmp_path) -> Client:
    """alice's ``geoml_hub.client.Client`` of the WPS behind the hub (skips without the shared data)."""
    if not cluster.shared_data:
        pytest.skip("GEOML_CLUSTER_DATA_PV is not set: the WPS tests need ../shared/data on the cluster "
                    "(tests/cluster/README.md)")
    return Client(f"{hub_url}/services/wps", token=alice_token, progress=False, download_dir=tmp_path)


def kubernetes_job(cluster, job_id: str):
    """The ``batch/v1`` Job of WPS job ``job_id``, or ``None``."""
    jobs = cluster.batch.list_namespaced_job(cluster.namespace, label_selector=f"{JOB_ID_LABEL}={job_id}").items
    assert len(jobs) <= 1, f"{len(jobs)} Jobs for WPS job {job_id}"
    return jobs[0] if jobs else None


# -- a. the release ---------------------------------------------------------------------------------------
def test_chart_pods_are_ready_and_the_hub_answers(cluster, hub_url):
    pods = cluster.pods(INSTANCE)
    chart = [p for p in pods if p.metadata.labels.get("app.kubernetes.io/component") not in ("singleuser-server",
                                                                                             "wps-job")]
    components = {p.metadata.labels["app.kubernetes.io/component"] for p in chart}
    assert components >= {"hub", "proxy", "wps", "postgresql"}, f"{components}\n{cluster.report()}"
    not_ready = [p.metadata.name for p in chart
                 if not any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    assert not not_ready, f"pods not ready: {not_ready}\n{cluster.report()}"

    r = requests.get(f"{hub_url}/hub/api", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json"), r.text
    assert r.json()["version"]
    # the hub registered the WPS service route in the proxy
    r = requests.get(f"{hub_url}/services/wps/health", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text


# -- b. a CPU notebook server ---------------------------------------------------------------------------
def test_cpu_profile_server_runs_in_a_non_root_pod_without_gpu(cluster, hub_url, admin_token, alice_token):
    from kubernetes.stream import stream

    me = hub_api(hub_url, admin_token, "GET", "/user").json()
    assert me["name"] == cluster.values["hub"]["adminUsers"][0] and me["admin"] is True

    r = hub_api(hub_url, admin_token, "POST", f"/users/{ALICE}/server", json={"profile": "cpu"})
    assert r.status_code in (201, 202), r.text

    def ready() -> bool:
        server = hub_api(hub_url, admin_token, "GET", f"/users/{ALICE}").json()["servers"].get("")
        if server is None:
            pytest.fail(f"alice's server stopped while starting (the spawn failed)\n{cluster.report()}")
        return server["ready"]

    cluster.wait(ready, SPAWN_TIMEOUT, "alice's server ready", interval=3)
    # through the proxy into her server, with her own token
    r = requests.get(f"{hub_url}/user/{ALICE}/api/status", headers={"Authorization": f"token {alice_token}"},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[-2000:]

    selector = f"{SINGLEUSER},hub.jupyter.org/username={ALICE}"
    pods = cluster.pods(selector)
    assert len(pods) == 1, f"{len(pods)} pods of alice\n{cluster.report()}"
    pod = pods[0]
    assert pod.status.phase == "Running"
    nb = container(pod.spec, "notebook")
    cpu_profile = next(p for p in cluster.values["singleuser"]["profileList"] if p["slug"] == "cpu")
    assert nb.image == cpu_profile["kubespawner_override"]["image"]
    env = {e.name: e.value for e in nb.env or []}
    assert env.get("GEOML_DEVICE") == "cpu"
    assert GPU not in resources_of(nb, "limits") and GPU not in resources_of(nb, "requests")
    # /dev/shm: a memory-backed emptyDir
    shm = [m for m in nb.volume_mounts if m.mount_path == "/dev/shm"]
    assert len(shm) == 1, [m.mount_path for m in nb.volume_mounts]
    volume = next(v for v in pod.spec.volumes if v.name == shm[0].name)
    assert volume.empty_dir is not None and volume.empty_dir.medium == "Memory"
    # non-root, declared and in fact
    csc, psc = nb.security_context, pod.spec.security_context
    uid = (csc.run_as_user if csc else None) or (psc.run_as_user if psc else None)
    assert uid not in (None, 0)
    assert (csc and csc.run_as_non_root) or (psc and psc.run_as_non_root)
    assert csc is not None and csc.allow_privilege_escalation is False
    out = stream(cluster.core.connect_get_namespaced_pod_exec, pod.metadata.name, cluster.namespace,
                 container="notebook", command=["sh", "-c", "id -u; stat -f -c %T /dev/shm"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out.split() == [str(uid), "tmpfs"], out

    r = hub_api(hub_url, admin_token, "DELETE", f"/users/{ALICE}/server")
    assert r.status_code in (202, 204), r.text
    cluster.wait(lambda: "" not in hub_api(hub_url, admin_token, "GET", f"/users/{ALICE}").json()["servers"],
                 STOP_TIMEOUT, "alice's server stopped")
    cluster.wait(lambda: not cluster.pods(selector), STOP_TIMEOUT, "alice's pod deleted")


# -- c. WPS jobs as Kubernetes Jobs -------------------------------------------------------------------
def test_train_model_runs_as_a_kubernetes_job_in_the_cpu_image(cluster, wps):
    # a process that stays in the WPS pod, on the real scene of the shared data
    ext = wps.extract_samples(scene=SCENE, reference=LABELS, class_names=CLASS_NAMES)
    assert ext.sample_count == sum(CHIAPAS_COUNTS.values()) and ext.class_counts == CHIAPAS_COUNTS

    job = wps.train_model(samples=EUROSAT, epochs=1, device="cpu", wait=False)
    k8s_job = cluster.wait(lambda: kubernetes_job(cluster, job.job_id), 120,
                           f"a Kubernetes Job labelled {JOB_ID_LABEL}={job.job_id}")
    worker = k8s_job.spec.template.spec.containers[0]
    assert worker.image == image_ref(cluster.values["wps"]["jobs"]["cpuImage"])
    assert GPU not in resources_of(worker, "limits")

    try:
        result = job.wait(timeout=TRAIN_TIMEOUT)
    except WPSError as exc:
        pytest.fail(f"{exc}\n{cluster.report()}")
    assert result.epochs_run == 1 and result.device == "cpu"
    assert result.n_train + result.n_val == EUROSAT_FILES
    assert result.model.stat().st_size > 0  # written by the Job's pod, served by the WPS
    record = job.info()
    assert record["status"] == "succeeded" and record["percent"] == 100, record
    # the worker records the final state before its pod exits: the Job completes just after
    name = k8s_job.metadata.name
    cluster.wait(lambda: cluster.batch.read_namespaced_job(name, cluster.namespace).status.succeeded == 1, 120,
                 f"Job {name} complete")


def test_cancel_deletes_the_kubernetes_job(cluster, wps):
    job = wps.train_model(samples=EUROSAT, epochs=500, val_fraction=0.0, device="cpu", wait=False)
    k8s_job = cluster.wait(lambda: kubernetes_job(cluster, job.job_id), 120,
                           f"a Kubernetes Job labelled {JOB_ID_LABEL}={job.job_id}")
    cluster.wait(lambda: any(p.status.phase == "Running" for p in cluster.pods(f"{JOB_ID_LABEL}={job.job_id}")),
                 300, f"the pod of Job {k8s_job.metadata.name} running")
    cluster.wait(lambda: job.info()["status"] == "running", 60, f"WPS job {job.job_id} running")

    assert wps.cancel(job.job_id) is True
    cluster.wait(lambda: kubernetes_job(cluster, job.job_id) is None, CANCEL_TIMEOUT,
                 f"Job {k8s_job.metadata.name} deleted after the cancel", interval=1)
    assert job.info()["status"] == "dismissed"
    assert job.status().state == "dismissed"
