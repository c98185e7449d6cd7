"""The Kubernetes Job backend of the WPS (geoml_hub.wps.jobs.kubernetes), without a cluster.

The Job manifests are validated strictly with kubernetes-validate; the status mapping is
tested on Job and Pod objects as the ``kubernetes`` client returns them (deserialized from
API-server JSON by the client's own ApiClient); the backend talks HTTP to a small local
server that plays the API server, so the requests the real client sends are checked.
"""

from __future__ import annotations

import inspect
import json
import uuid
from urllib.parse import parse_qs

import pytest

import kubernetes_validate
from kubernetes import client
from urllib3.response import HTTPResponse

from geoml_hub.wps.jobs import kubernetes as k8s
from kube_standin import ApiHandler, serve

SETTINGS = "/var/lib/geoml-hub/wps/settings.json"


def make_spec(**kw) -> k8s.JobSpec:
    base = dict(
        namespace="geoml",
        cpu_image="docker.io/geoml-hub/notebook-cpu:1.0.0",
        cuda_image="docker.io/geoml-hub/notebook-cuda:1.0.0",
        service_account="geoml-wps-job",
        image_pull_secrets=["regcred"],
        volumes=[
            {"name": "outputs", "persistentVolumeClaim": {"claimName": "geoml-wps-outputs"}},
            {"name": "geoml-data", "persistentVolumeClaim": {"claimName": "rs-data", "readOnly": True}},
            {"name": "geoml-results", "persistentVolumeClaim": {"claimName": "geoml-results"}},
        ],
        volume_mounts=[
            {"name": "outputs", "mountPath": "/var/lib/geoml-hub/wps"},
            {"name": "geoml-data", "mountPath": "/srv/geoml/data", "readOnly": True},
            {"name": "geoml-results", "mountPath": "/srv/geoml/results"},
        ],
        backoff_limit=2,
        active_deadline_seconds=7200,
        ttl_seconds_after_finished=3600,
        labels={"app.kubernetes.io/instance": "geoml"},
    )
    base.update(kw)
    return k8s.JobSpec(**base)


def container(manifest):
    (c,) = manifest["spec"]["template"]["spec"]["containers"]
    return c


# -- manifests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", "cuda", "auto"])
@pytest.mark.parametrize("version", ["1.30.0", None])
def test_manifest_validates_strictly(device, version):
    version = version or kubernetes_validate.latest_version()
    m = k8s.job_manifest(make_spec(), str(uuid.uuid4()), "train_model", device, SETTINGS)
    kubernetes_validate.validate(m, version, strict=True)


def test_cpu_manifest():
    job_id = str(uuid.uuid4())
    m = k8s.job_manifest(make_spec(), job_id, "classify_scene", "cpu", SETTINGS)
    assert m["apiVersion"] == "batch/v1" and m["kind"] == "Job"
    assert m["metadata"]["name"] == f"geoml-wps-{job_id}" and m["metadata"]["namespace"] == "geoml"
    for labels in (m["metadata"]["labels"], m["spec"]["template"]["metadata"]["labels"]):
        assert labels["app.kubernetes.io/component"] == "wps-job"
        assert labels["geoml-hub/job-id"] == job_id
        assert labels["geoml-hub/process"] == "classify_scene"
        assert labels["geoml-hub/device"] == "cpu"
        assert labels["app.kubernetes.io/instance"] == "geoml"
    c = container(m)
    assert c["image"] == "docker.io/geoml-hub/notebook-cpu:1.0.0"
    assert c["command"] == ["python", "-m", "geoml_hub.wps.jobs.worker", SETTINGS, job_id]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["GEOML_DEVICE"] == "cpu" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in c["resources"].get("requests", {})
    pod = m["spec"]["template"]["spec"]
    assert "tolerations" not in pod
    assert "nvidia.com/gpu.present" not in pod.get("nodeSelector", {})
    # kept off GPU nodes, as the CPU profile
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}]
    assert m["spec"]["backoffLimit"] == 2
    assert m["spec"]["activeDeadlineSeconds"] == 7200
    assert m["spec"]["ttlSecondsAfterFinished"] == 3600
    assert pod["restartPolicy"] == "Never"


def test_cuda_manifest():
    job_id = str(uuid.uuid4())
    m = k8s.job_manifest(make_spec(), job_id, "train_model", "cuda", SETTINGS)
    c = container(m)
    assert c["image"] == "docker.io/geoml-hub/notebook-cuda:1.0.0"
    assert c["command"][-2:] == [SETTINGS, job_id]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod = m["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "affinity" not in pod
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["GEOML_DEVICE"] == "cuda" and "CUDA_VISIBLE_DEVICES" not in env
    assert "NVIDIA_VISIBLE_DEVICES" not in env  # the device plugin sets it
    assert m["metadata"]["labels"]["geoml-hub/device"] == "cuda"


def test_auto_device_follows_the_default():
    job_id = str(uuid.uuid4())
    m = k8s.job_manifest(make_spec(), job_id, "train_model", "auto", SETTINGS)
    assert container(m)["image"].endswith("notebook-cpu:1.0.0")
    m = k8s.job_manifest(make_spec(default_device="cuda"), job_id, "train_model", "auto", SETTINGS)
    assert container(m)["image"].endswith("notebook-cuda:1.0.0")
    assert container(m)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    m = k8s.job_manifest(make_spec(default_device="cuda"), job_id, "train_model", None, SETTINGS)
    assert container(m)["image"].endswith("notebook-cuda:1.0.0")
    with pytest.raises(ValueError, match="device"):
        k8s.job_manifest(make_spec(), job_id, "train_model", "tpu", SETTINGS)
    with pytest.raises(ValueError, match="default_device"):
        make_spec(default_device="gpu")


def test_security_shm_and_mounts():
    m = k8s.job_manifest(make_spec(), str(uuid.uuid4()), "train_model", "cuda", SETTINGS)
    pod = m["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "geoml-wps-job"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    c = container(m)
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    assert vols["outputs"]["persistentVolumeClaim"]["claimName"] == "geoml-wps-outputs"
    mounts = {v["mountPath"]: v for v in c["volumeMounts"]}
    assert mounts["/dev/shm"]["name"] == "dshm"
    assert mounts["/tmp"]["name"] == "tmp"
    assert mounts["/srv/geoml/data"]["readOnly"] is True
    assert mounts["/var/lib/geoml-hub/wps"]["name"] == "outputs"
    assert "readOnly" not in mounts["/srv/geoml/results"]
    # every mount names a volume of the pod
    assert {v["name"] for v in c["volumeMounts"]} <= set(vols)


def test_optional_fields_and_bad_ids():
    spec = make_spec(active_deadline_seconds=None, ttl_seconds_after_finished=None, backoff_limit=0,
                     service_account="", image_pull_secrets=[])
    m = k8s.job_manifest(spec, "abc", "train_model", "cpu", SETTINGS)
    assert "activeDeadlineSeconds" not in m["spec"] and "ttlSecondsAfterFinished" not in m["spec"]
    assert m["spec"]["backoffLimit"] == 0
    assert "serviceAccountName" not in m["spec"]["template"]["spec"]
    kubernetes_validate.validate(m, "1.30.0", strict=True)
    with pytest.raises(ValueError, match="Job name"):
        k8s.job_manifest(spec, "x" * 60, "train_model", "cpu", SETTINGS)
    with pytest.raises(ValueError, match="Job name"):
        k8s.job_manifest(spec, "a/b", "train_model", "cpu", SETTINGS)
    with pytest.raises(ValueError):
        make_spec(backoff_limit=-1)


# -- status mapping on objects as the client returns them ----------------------------------------
API = client.ApiClient()


def deserialize(data, kind):
    """What the kubernetes client makes of an API server's JSON answer."""
    text = json.dumps(data)
    if "content_type" in inspect.signature(API.deserialize).parameters:  # kubernetes >= 35
        return API.deserialize(text, kind, "application/json")
    return API.deserialize(HTTPResponse(body=text.encode(), status=200, preload_content=True), kind)


def job_json(job_id, conditions=(), active=0, failed=0, succeeded=0, deleting=False):
    meta = {"name": f"geoml-wps-{job_id}", "namespace": "geoml", "uid": str(uuid.uuid4()),
            "creationTimestamp": "2025-01-01T10:00:00Z", "labels": {"geoml-hub/job-id": job_id}}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T10:05:00Z"
        meta["finalizers"] = ["foregroundDeletion"]
    status = {"startTime": "2025-01-01T10:00:00Z"}
    if active:
        status["active"] = active
    if failed:
        status["failed"] = failed
    if succeeded:
        status["succeeded"] = succeeded
    if conditions:
        status["conditions"] = [dict({"status": "True", "lastProbeTime": "2025-01-01T12:00:00Z",
                                      "lastTransitionTime": "2025-01-01T12:00:00Z"}, **c) for c in conditions]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 7200, "template": {"spec": {"containers": []}}},
            "status": status}


def pod_json(job_id, phase, state, name="p1", image="docker.io/geoml-hub/notebook-cuda:1.0.0", last_state=None,
             created="2025-01-01T10:00:01Z", conditions=None):
    cs = {"name": "worker", "image": image, "imageID": "", "ready": phase == "Running", "restartCount": 0,
          "state": state}
    if last_state:
        cs["lastState"] = last_state
    status = {"phase": phase, "containerStatuses": [cs] if state else None}
    if conditions:
        status["conditions"] = conditions
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"geoml-wps-{job_id[:8]}-{name}", "namespace": "geoml", "creationTimestamp": created,
                         "labels": {"geoml-hub/job-id": job_id}},
            "spec": {"containers": [{"name": "worker", "image": image}]}, "status": status}


def as_objects(job, *pods):
    return deserialize(job, "V1Job"), [deserialize(p, "V1Pod") for p in pods]


@pytest.fixture
def jid():
    return str(uuid.uuid4())


def test_deserialized_objects_are_client_models(jid):
    job, (pod,) = as_objects(job_json(jid, active=1), pod_json(jid, "Running", {"running": {}}))
    assert isinstance(job, client.V1Job) and isinstance(pod, client.V1Pod)
    assert job.status.conditions is None and job.status.active == 1
    assert pod.status.container_statuses[0].state.running is not None


def test_state_running(jid):
    job, pods = as_objects(job_json(jid, active=1),
                           pod_json(jid, "Running", {"running": {"startedAt": "2025-01-01T10:00:05Z"}}))
    state, reason = k8s.job_state(job, pods)
    assert state == "running" and "running in pod" in reason


def test_state_pending_unschedulable_is_running(jid):
    cond = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    job, pods = as_objects(job_json(jid, active=1), pod_json(jid, "Pending", None, conditions=cond))
    state, reason = k8s.job_state(job, pods)
    assert state == "running" and "Insufficient nvidia.com/gpu" in reason
    assert k8s.job_state(deserialize(job_json(jid), "V1Job"), []) == ("running", "waiting for the Kubernetes Job's pod")


def test_state_complete(jid):
    job, pods = as_objects(job_json(jid, succeeded=1, conditions=[{"type": "SuccessCriteriaMet"}, {"type": "Complete"}]),
                           pod_json(jid, "Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}}))
    assert k8s.job_state(job, pods)[0] == "succeeded"


def test_state_deadline(jid):
    job, pods = as_objects(job_json(jid, failed=1, conditions=[
        {"type": "Failed", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]))
    state, reason = k8s.job_state(job, pods)
    assert state == "failed"
    assert "DeadlineExceeded" in reason and "7200" in reason


def test_state_backoff_limit_with_oom(jid):
    oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    job, pods = as_objects(
        job_json(jid, failed=3, conditions=[{"type": "FailureTarget", "reason": "BackoffLimitExceeded"},
                                            {"type": "Failed", "reason": "BackoffLimitExceeded",
                                             "message": "Job has reached the specified backoff limit"}]),
        pod_json(jid, "Failed", oom, name="a", created="2025-01-01T10:00:01Z"),
        pod_json(jid, "Failed", oom, name="c", created="2025-01-01T10:20:01Z"))
    state, reason = k8s.job_state(job, pods)
    assert state == "failed"
    assert "BackoffLimitExceeded" in reason and "OOMKilled" in reason and "-c" in reason


def test_state_image_pull_failure(jid):
    image = "registry.example.org/geoml/notebook-cuda:missing"
    for why in ("ErrImagePull", "ImagePullBackOff"):
        job, pods = as_objects(job_json(jid, active=1), pod_json(jid, "Pending", {"waiting": {
            "reason": why, "message": f'Back-off pulling image "{image}"'}}, image=image))
        state, reason = k8s.job_state(job, pods)
        assert state == "failed", (why, reason)
        assert why in reason and image in reason


def test_state_crash_loop_and_retry(jid):
    last = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    job, pods = as_objects(job_json(jid, active=1), pod_json(
        jid, "Running", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}, last_state=last))
    state, reason = k8s.job_state(job, pods)
    assert state == "failed" and "CrashLoopBackOff" in reason and "OOMKilled" in reason
    # a failed pod while the Job still has retries left: still running, the reason says why
    job, pods = as_objects(job_json(jid, failed=1),
                           pod_json(jid, "Failed", {"terminated": {"exitCode": 1, "reason": "Error"}}))
    state, reason = k8s.job_state(job, pods)
    assert state == "running" and "retrying" in reason and "exited with code 1" in reason


def test_state_cancelled_and_gone(jid):
    job, pods = as_objects(job_json(jid, active=1, deleting=True), pod_json(jid, "Running", {"running": {}}))
    assert k8s.job_state(job, pods)[0] == "cancelled"
    state, reason = k8s.job_state(None, [])
    assert state == "failed" and "no longer exists" in reason


def test_state_accepts_plain_dicts(jid):
    assert k8s.job_state(job_json(jid, conditions=[{"type": "Complete"}]), [])[0] == "succeeded"
    state, reason = k8s.job_state(job_json(jid, active=1), [pod_json(
        jid, "Pending", {"waiting": {"reason": "ErrImagePull"}}, image="bad/image:1")])
    assert state == "failed" and "bad/image:1" in reason


# -- the backend against a local stand-in of the API server --------------------------------------
class FakeApiServer:
    """Records the HTTP requests of the real client and answers them with stored JSON."""

    def __init__(self):
        self.requests = []
        self.jobs = {}
        self.pods = []
        self.log = "epoch 1/3 loss 0.52\n"
        outer = self

        class Handler(ApiHandler):
            def do_POST(self):
                body = self._body()
                outer.requests.append(("POST", self.path, body))
                name = body["metadata"]["name"]
                if name in outer.jobs:
                    return self._status(409, "AlreadyExists")
                outer.jobs[name] = body
                self._send(201, body)

            def do_GET(self):
                outer.requests.append(("GET", self.path, None))
                path = self.path.split("?")[0]
                if path.endswith("/log"):
                    return self._send(200, outer.log.encode(), "text/plain")
                if path.endswith("/pods"):
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": outer.pods})
                name = path.rsplit("/", 1)[1]
                if name not in outer.jobs:
                    return self._status(404, "NotFound")
                self._send(200, outer.jobs[name])

            def do_DELETE(self):
                body = self._body()
                outer.requests.append(("DELETE", self.path, body))
                name = self.path.split("?")[0].rsplit("/", 1)[1]
                if outer.jobs.pop(name, None) is None:
                    return self._status(404, "NotFound")
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        self.httpd, self.url = serve(Handler)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def backend():
    server = FakeApiServer()
    conf = client.Configuration()
    conf.host = server.url
    api = client.ApiClient(conf)
    yield server, k8s.KubernetesJobBackend(make_spec(), SETTINGS, client.BatchV1Api(api), client.CoreV1Api(api))
    api.close()
    server.close()


def test_backend_submit_state_logs_cancel(backend, jid):
    server, be = backend
    name = be.submit(jid, "train_model", "cuda")
    assert name == f"geoml-wps-{jid}"
    method, path, body = server.requests[-1]
    assert (method, path) == ("POST", "/apis/batch/v1/namespaces/geoml/jobs")
    assert body == k8s.job_manifest(be.spec, jid, "train_model", "cuda", SETTINGS)
    assert be.submit(jid, "train_model", "cuda") == name  # AlreadyExists is not an error

    server.pods = [pod_json(jid, "Running", {"running": {}})]
    state, reason = be.state(jid)
    assert state == "running"
    gets = [p for m, p, _ in server.requests if m == "GET"]
    assert gets[0] == f"/apis/batch/v1/namespaces/geoml/jobs/{name}"
    path, _, query = gets[1].partition("?")
    assert path == "/api/v1/namespaces/geoml/pods"
    assert parse_qs(query)["labelSelector"] == [f"geoml-hub/job-id={jid}"]

    assert be.logs(jid, tail_lines=50) == server.log
    path, _, query = server.requests[-1][1].partition("?")
    assert path == f"/api/v1/namespaces/geoml/pods/geoml-wps-{jid[:8]}-p1/log"
    assert parse_qs(query) == {"container": ["worker"], "tailLines": ["50"]}

    server.jobs[name]["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}
    assert be.state(jid)[0] == "failed"

    assert be.cancel(jid) is True
    method, path, body = server.requests[-1]
    assert (method, path) == ("DELETE", f"/apis/batch/v1/namespaces/geoml/jobs/{name}")
    assert body["propagationPolicy"] == "Foreground"
    assert be.cancel(jid) is False
    state, reason = be.state(jid)
    assert state == "failed" and "no longer exists" in reason
    server.pods = []
    assert be.logs(jid) == ""


# -- configuration -------------------------------------------------------------------------------
def test_load_job_spec_errors_name_the_file(tmp_path):
    from geoml_hub.errors import ParameterError

    path = tmp_path / "job-spec.json"
    with pytest.raises(ParameterError, match="no such file"):
        k8s.load_job_spec(path)
    path.write_text("{not json")
    with pytest.raises(ParameterError, match=f"{path}: not JSON"):
        k8s.load_job_spec(path)
    path.write_text(json.dumps({"cpu_image": "a:1", "cuda_image": "b:1", "gpus": 2}))
    with pytest.raises(ParameterError, match="unknown key.*gpus"):
        k8s.load_job_spec(path)
    path.write_text(json.dumps({"cpu_image": "a:1", "cuda_image": "b:1", "default_device": "tpu"}))
    with pytest.raises(ParameterError, match="default_device must be cpu or cuda"):
        k8s.load_job_spec(path)
    path.write_text(json.dumps({"cpu_image": "a:1", "cuda_image": "b:1", "backoff_limit": 3}))
    assert k8s.load_job_spec(path).backoff_limit == 3


def test_backend_settings_are_checked(tmp_path, monkeypatch):
    from geoml_hub.errors import ParameterError
    from geoml_hub.processes import build_service
    from geoml_hub.wps.settings import Settings

    with pytest.raises(ParameterError, match="backend must be local or kubernetes"):
        Settings(state_dir=tmp_path, backend="slurm")
    with pytest.raises(ParameterError, match="needs kubernetes_job_spec"):
        Settings(state_dir=tmp_path, backend="kubernetes")
    # which processes may run as Kubernetes Jobs is the registry's to say: the service refuses the rest
    bad = Settings(state_dir=tmp_path, backend="kubernetes", kubernetes_job_spec=tmp_path / "s.json",
                   kubernetes_processes="train_model, extract_samples")
    with pytest.raises(ParameterError, match="extract_samples cannot run as Kubernetes Jobs"):
        build_service(bad)
    monkeypatch.delenv("GEOML_NO_SUCH_DB", raising=False)
    with pytest.raises(ParameterError, match="GEOML_NO_SUCH_DB is not set"):
        Settings(state_dir=tmp_path, database="env:GEOML_NO_SUCH_DB")
    s = Settings(state_dir=tmp_path, backend="kubernetes", kubernetes_job_spec=tmp_path / "s.json",
                 kubernetes_processes="train_model")
    assert s.runs_on_kubernetes("train_model") and not s.runs_on_kubernetes("classify_scene")
    assert not Settings(state_dir=tmp_path).runs_on_kubernetes("train_model")


def test_backend_for_a_bad_kubeconfig_is_one_clear_error(tmp_path):
    from geoml_hub.errors import ParameterError
    from geoml_hub.wps.settings import Settings

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"cpu_image": "a:1", "cuda_image": "b:1"}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    s = Settings(state_dir=tmp_path / "state", backend="kubernetes", kubernetes_job_spec=spec,
                 kubernetes_config=str(kubeconfig))
    with pytest.raises(ParameterError, match=f"kubernetes_config: cannot load {kubeconfig}"):
        k8s.backend_for(s)


# -- fan-out Jobs (the blocks of a large classification or QC) -------------------------------------
#: Fields of a Job spec that Kubernetes 1.20 (the real test cluster's) does not know; its API
#: server drops them silently, so a fallback manifest must not rely on any of them.
NEWER_THAN_1_20 = {"completionMode", "backoffLimitPerIndex", "maxFailedIndexes", "podFailurePolicy",
                   "podReplacementPolicy", "successPolicy", "managedBy", "suspend"}
TASK = "/srv/wps/work/JOB/blocks/task.json"


@pytest.mark.parametrize("version,schema", [((1, 30), "1.30.0"), ((1, 37), None), ((1, 28), "1.28.0"),
                                            ((1, 25), "1.25.0")])
def test_fan_out_is_one_indexed_job_on_servers_that_have_them(version, schema):
    job_id = str(uuid.uuid4())
    (m,) = k8s.fan_out_manifests(make_spec(), job_id, "classify_scene", "cpu", TASK, blocks=5, parallelism=2,
                                 retries=1, version=version)
    kubernetes_validate.validate(m, schema or kubernetes_validate.latest_version(), strict=True)
    spec = m["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 5 and spec["parallelism"] == 2
    if version >= (1, 29):  # a failed block is retried on its own
        assert spec["backoffLimitPerIndex"] == 1 and "backoffLimit" not in spec
    else:  # 1.22-1.28: one limit for all the blocks together
        assert spec["backoffLimit"] == 5 and "backoffLimitPerIndex" not in spec
    assert m["metadata"]["name"] == f"geoml-wps-{job_id}-blocks"
    labels = m["metadata"]["labels"]
    assert labels["geoml-hub/fan-out-of"] == job_id and "geoml-hub/job-id" not in labels
    (c,) = spec["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "geoml_hub.blocks", TASK]
    assert not any(e["name"] == "JOB_COMPLETION_INDEX" for e in c["env"])  # Kubernetes sets it
    # the same pod as a whole WPS job's Job (one pod template): image, mounts, security, no token
    whole = k8s.job_manifest(make_spec(), job_id, "classify_scene", "cpu", SETTINGS)["spec"]["template"]["spec"]
    pod = spec["template"]["spec"]
    assert {k: v for k, v in pod.items() if k != "containers"} == {k: v for k, v in whole.items() if k != "containers"}
    (wc,) = whole["containers"]
    assert {k: v for k, v in c.items() if k != "command"} == {k: v for k, v in wc.items() if k != "command"}
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("version", [(1, 20), (1, 21), None])
def test_fan_out_before_indexed_jobs_is_one_job_per_block(version):
    job_id = str(uuid.uuid4())
    ms = k8s.fan_out_manifests(make_spec(), job_id, "validate_classification", "auto", TASK, blocks=3,
                               parallelism=2, retries=2, version=version)
    assert [m["metadata"]["name"] for m in ms] == [f"geoml-wps-{job_id}-b{i}" for i in range(3)]
    for i, m in enumerate(ms):
        kubernetes_validate.validate(m, "1.25.0", strict=True)  # the oldest schema at hand
        assert not NEWER_THAN_1_20 & set(m["spec"]), set(m["spec"])
        assert m["spec"]["backoffLimit"] == 2  # the block's own retries, as backoffLimitPerIndex
        (c,) = m["spec"]["template"]["spec"]["containers"]
        assert {"name": "JOB_COMPLETION_INDEX", "value": str(i)} in c["env"]
        assert c["command"] == ["python", "-m", "geoml_hub.blocks", TASK]
        assert m["spec"]["template"]["metadata"]["labels"]["geoml-hub/block-index"] == str(i)


def test_fan_out_job_names_must_fit():
    with pytest.raises(ValueError, match="too long"):
        k8s.fan_out_manifests(make_spec(name_prefix="geoml-wps-long-prefix-"), str(uuid.uuid4()), "classify_scene",
                              "cpu", TASK, blocks=3, parallelism=2, retries=0, version=(1, 30))
