"""WPS jobs as Kubernetes Jobs, end to end without a cluster.

A real ``geoml-hub wps serve`` (gunicorn) with ``backend = kubernetes`` talks with its real
``kubernetes`` client, configured by a kubeconfig, to tests/kube_standin.py, which plays the
API server and the kubelet: a Job's container command (the WPS worker) runs as a local process.
Checked: train_model becomes a Job with the CPU or CUDA image chosen by ``device``, progress
reaches the client from the worker in the "pod" through the shared job database, the database
URL reaches the pod from a Secret and is never written to disk, other processes stay local,
cancel deletes the Job, and an image pull failure, the deadline and a Job deleted outside
the WPS fail the WPS job with the reason.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from kube_standin import KubeStandIn
from test_wps_server import EUROSAT, execute, job, status_of, wait_final, wait_for
from wps_server import WpsServer

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


def test_training_runs_as_a_kubernetes_job(cluster):
    standin, server = cluster
    settings = json.loads((server.state_dir / "settings.json").read_text())
    assert settings["database"] == f"env:{DB_ENV}" and settings["backend"] == "kubernetes"
    pywps_cfg = (server.state_dir / "pywps.cfg").read_text()
    assert f"database = ${{{DB_ENV}}}" in pywps_cfg and "jobs.sqlite" not in pywps_cfg

    job_id, loc, _ = execute(server, "train_model", {"samples": EUROSAT, "epochs": 4, "patience": 50,
                                                     "device": "cpu"})
    percents = []
    final = wait_final(server, [job_id], timeout=240,
                       watch=lambda jobs: percents.append(jobs[job_id]["percent"]))[job_id]
    assert final["status"] == "succeeded", (final, server.log_text()[-3000:])
    run = standin.run_of(job_id)
    assert run is not None, "train_model did not become a Kubernetes Job"
    manifest = run.manifest
    assert manifest["metadata"]["name"] == f"geoml-wps-{job_id}"
    assert manifest["metadata"]["namespace"] == "geoml"
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert labels["geoml-hub/process"] == "train_model" and labels["geoml-hub/device"] == "cpu"
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == CPU_IMAGE
    assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {}))
    assert container["command"][-1] == job_id
    # progress came from the worker in the pod, step by step, through the shared job database
    steps = sorted(set(p for p in percents if 0 < p < 100))
    assert len(steps) >= 3, percents
    assert final_status(loc)[0] == "ProcessSucceeded"
    outputs = server.state_dir / "outputs" / job_id
    assert any(outputs.rglob("*.pt")), sorted(p.name for p in outputs.rglob("*"))
    assert "[job worker" in run.log.read_text()  # the pod log is the worker's output

    # a process outside kubernetes_processes runs in a local worker
    n_jobs = len(standin.created)
    job2, _, _ = execute(server, "balance_samples", {"samples": EUROSAT})
    assert wait_final(server, [job2], timeout=120)[job2]["status"] == "succeeded"
    assert len(standin.created) == n_jobs


def test_cuda_device_selects_the_cuda_image_and_a_pull_failure_fails_the_job(cluster):
    standin, server = cluster
    job_id, loc, _ = execute(server, "train_model", {"samples": EUROSAT, "epochs": 2, "device": "cuda"})
    final = wait_final(server, [job_id], timeout=120)[job_id]
    assert final["status"] == "failed"
    assert f"image pull failed (ErrImagePull) for image {CUDA_IMAGE}" in final["message"], final
    name, _, text = final_status(loc)
    assert name == "ProcessFailed" and CUDA_IMAGE in text
    spec = standin.run_of(job_id).manifest["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == CUDA_IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_cancel_deletes_the_kubernetes_job(cluster):
    standin, server = cluster
    job_id, loc, _ = execute(server, "train_model", {"samples": EUROSAT, "epochs": 400, "patience": 400,
                                                     "device": "cpu"})
    wait_for(lambda: job(server, job_id)["percent"] > 0, timeout=120, what="progress from the pod")
    proc = standin.run_of(job_id).proc
    r = requests.post(f"{server.url}/jobs/{job_id}/cancel", timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "dismissed"
    assert f"geoml-wps-{job_id}" in standin.deleted
    assert proc.poll() is not None, "the pod's worker still runs after cancel"
    name, _, text = final_status(loc)
    assert name == "ProcessFailed" and "dismissed" in text
    assert not (server.state_dir / "outputs" / job_id).exists()


def test_job_deleted_outside_the_wps_fails_with_the_reason(cluster):
    standin, server = cluster
    job_id, _, _ = execute(server, "train_model", {"samples": EUROSAT, "epochs": 400, "patience": 400,
                                                   "device": "cpu"})
    wait_for(lambda: job(server, job_id)["percent"] > 0, timeout=120, what="progress from the pod")
    standin._delete(f"geoml-wps-{job_id}")  # e.g. kubectl delete job
    final = wait_final(server, [job_id], timeout=60)[job_id]
    assert final["status"] == "failed" and "no longer exists" in final["message"], final


def test_deadline_fails_the_job(tmp_path, monkeypatch):
    standin, server = start(tmp_path, monkeypatch, active_deadline_seconds=4)
    try:
        job_id, loc, _ = execute(server, "train_model", {"samples": EUROSAT, "epochs": 400, "patience": 400,
                                                         "device": "cpu"})
        final = wait_final(server, [job_id], timeout=90)[job_id]
        assert final["status"] == "failed", final
        assert "deadline (DeadlineExceeded, activeDeadlineSeconds=4)" in final["message"], final
        assert final_status(loc)[0] == "ProcessFailed"
        log = (server.state_dir / "logs" / f"{job_id}.log").read_text()
        assert "--- Kubernetes pod log ---" in log
    finally:
        server.stop()
        standin.close()
