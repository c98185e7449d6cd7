"""WPS jobs as Kubernetes Jobs where the real test cluster cannot go: a CUDA job on a GPU node.

The real single-node cluster of tests/cluster has no GPU, so a CUDA job's placement and the
failure of its image pull are checked here: a real ``geoml-hub wps serve`` (gunicorn) with
``backend = kubernetes`` talks with its real ``kubernetes`` client to tests/kube_standin.py,
which plays the API server and the kubelet. Everything a CPU cluster can show (a training as a
Job with progress, cancel, a deleted pod or Job, the deadline) runs on the real cluster in
tests/cluster/test_cluster.py.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from kube_standin import KubeStandIn
from wps_server import EUROSAT, WpsServer, execute, status_of, wait_final, wait_for

pytestmark = pytest.mark.slow

CPU_IMAGE = "registry.example.org/geoml-hub/notebook-cpu:0.1.0"
CUDA_IMAGE = "registry.example.org/geoml-hub/notebook-cuda:0.1.0"
DB_ENV = "GEOML_TEST_JOB_DATABASE"


def final_status(loc, timeout=30.0):
    """(name, percent, text) of a job's status document once it is final: the dispatcher marks
    the job table first (the arbiter between it and the worker), then writes the document."""
    deadline = time.monotonic() + timeout
    while True:
        st = status_of(requests.get(loc, timeout=30).content)
        if st[0] in ("ProcessSucceeded", "ProcessFailed") or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def start(tmp_path, monkeypatch, **spec_overrides):
    """A stand-in cluster and a WPS server whose train_model/classify_scene run on it."""
    state = tmp_path / "state"
    database = f"sqlite:///{state / 'jobs.sqlite'}"
    standin = KubeStandIn(tmp_path / "cluster", secrets={"geoml-wps-db": {"url": database}},
                          unpullable=[CUDA_IMAGE])
    spec = {"namespace": "geoml", "cpu_image": CPU_IMAGE, "cuda_image": CUDA_IMAGE,
            "service_account": "geoml-wps-job", "backoff_limit": 0, "active_deadline_seconds": 600,
            "env": {"OMP_NUM_THREADS": "1"},
            "env_from": [{"name": DB_ENV, "valueFrom": {"secretKeyRef": {"name": "geoml-wps-db", "key": "url"}}}]}
    spec.update(spec_overrides)
    spec_file = tmp_path / "job-spec.json"
    spec_file.write_text(json.dumps(spec))
    ini = tmp_path / "wps.ini"
    ini.write_text("[geoml]\nbackend = kubernetes\n"
                   f"kubernetes_job_spec = {spec_file}\nkubernetes_config = {standin.kubeconfig()}\n"
                   f"database = env:{DB_ENV}\n")
    monkeypatch.setenv(DB_ENV, database)
    server = WpsServer(state, parallel=1, extra=["--config", str(ini)]).start()
    return standin, server


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    standin, server = start(tmp_path, monkeypatch)
    yield standin, server
    server.stop()
    standin.close()


def test_cuda_device_selects_the_cuda_image_and_a_pull_failure_fails_the_job(cluster):
    standin, server = cluster
    job_id, loc, _ = execute(server, "train_model", {"samples": EUROSAT, "family": "cnn", "epochs": 2,
                                                     "device": "cuda"})
    final = wait_final(server, [job_id], timeout=120)[job_id]
    assert final["status"] == "failed"
    assert f"image pull failed (ErrImagePull) for image {CUDA_IMAGE}" in final["message"], final
    name, _, text = final_status(loc)
    assert name == "ProcessFailed" and CUDA_IMAGE in text
    # the dispatcher removed the failed job's Job: its manifest as created
    (manifest,) = [m for m in standin.created if m["metadata"]["labels"]["geoml-hub/job-id"] == job_id]
    # ... within a look or two of the dispatcher (every 2 s) after the job failed
    wait_for(lambda: f"geoml-wps-{job_id}" in standin.deleted, timeout=30, what="the failed job's Job removed")
    spec = manifest["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == CUDA_IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
