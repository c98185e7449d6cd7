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


# ---------------------------------------------------------------------------
# fan-out: the blocks of a large classification / QC as Kubernetes Jobs (Kubernetes 1.20: one Job
# per block, JOB_COMPLETION_INDEX in its environment, at most fan_out_parallelism at once)


def test_classify_and_qc_fan_out_over_block_jobs_and_match_one_process(tmp_path, monkeypatch, pixel_model):
    import shutil

    import numpy as np
    import rasterio

    from conftest import LABELS, SCENE_1999
    from geoml_hub.classification import classify_scene
    from geoml_hub.validation import validate_classification

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(pixel_model.model_path, models / "pixel.pt")
    extra = tmp_path / "fan-out.ini"
    standin, server = None, None
    try:
        standin, server = start(tmp_path, monkeypatch)
        server.stop()
        ini = (tmp_path / "wps.ini").read_text() + ("fan_out_min_pixels = 50000\nfan_out_parallelism = 2\n"
                                                    "fan_out_blocks = 3\n")
        extra.write_text(ini)
        server = WpsServer(tmp_path / "state", parallel=2,
                           extra=["--config", str(extra), "--data-root", f"models={models}"]).start()
        seen = []
        job_id, loc, _ = execute(server, "classify_scene", {"model": "models/pixel.pt", "scene": "data/landsat7_chiapas/"
                                                            "LE70220491999322EDC01_stack.gtif", "tile_size": 64,
                                                            "device": "cpu"})

        def watch(jobs):
            seen.append((jobs[job_id]["percent"], jobs[job_id]["message"]))
            running = [r for r in standin.runs.values() if r.exit_code is None and r.proc is not None
                       and r.proc.poll() is None]
            seen.append(("pods", len(running)))
        final = wait_final(server, [job_id], timeout=240, watch=watch)[job_id]
        assert final["status"] == "succeeded", final
        blocks = [m for m in standin.created if m["metadata"]["labels"].get("geoml-hub/fan-out-of") == job_id]
        assert [m["metadata"]["name"] for m in blocks] == [f"geoml-wps-{job_id}-b{i}" for i in range(3)]
        for i, m in enumerate(blocks):
            (c,) = m["spec"]["template"]["spec"]["containers"]
            assert c["command"][:3] == ["python", "-m", "geoml_hub.blocks"]
            assert {"name": "JOB_COMPLETION_INDEX", "value": str(i)} in c["env"]
            assert m["spec"]["backoffLimit"] == 1  # job_retries: a block's own retries
            assert "completionMode" not in m["spec"]  # Kubernetes 1.20 has no Indexed Jobs
        assert max(n for k, n in seen if k == "pods") <= 2  # fan_out_parallelism
        assert any("blocks on Kubernetes" in str(m) for _, m in seen)
        wait_for(lambda: all(m["metadata"]["name"] in standin.deleted for m in blocks), timeout=30,
                 what="the block Jobs removed")
        cls = server.state_dir / "outputs" / job_id / "classification.tif"
        if not cls.exists():
            (cls,) = server.state_dir.rglob(f"{job_id}/classification.tif")
        ref = classify_scene(pixel_model.model_path, SCENE_1999, tmp_path / "ref.tif", device="cpu", tile_size=64)
        with rasterio.open(cls) as a, rasterio.open(ref.path) as b:
            assert np.array_equal(a.read(1), b.read(1))
            assert a.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"

        # QC of that classification fans out too (3 blocks of counts, fused)
        qc_id, _, _ = execute(server, "validate_classification", {"classification": f"jobs/{job_id}/classification.tif",
                                                                 "reference": "data/landsat7_chiapas/training_data.gtif"})
        qc = wait_final(server, [qc_id], timeout=240)[qc_id]
        assert qc["status"] == "succeeded", qc
        qc_blocks = [m for m in standin.created if m["metadata"]["labels"].get("geoml-hub/fan-out-of") == qc_id]
        assert len(qc_blocks) == 3
        (summary,) = server.state_dir.rglob(f"{qc_id}/summary.json")
        fused = json.loads(summary.read_text())
        single = validate_classification(ref.path, LABELS)
        assert fused["overall_accuracy"] == single["overall_accuracy"] and fused["kappa"] == single["kappa"]
        assert fused["n"] == single["n"]
    finally:
        if server is not None:
            server.stop()
        if standin is not None:
            standin.close()


def test_a_failed_block_fails_the_job_with_its_reason(tmp_path, monkeypatch, pixel_model):
    """A block whose pod cannot run (here: its image cannot be pulled) fails the WPS job with the
    block's index and the pod's reason, and its Job is deleted."""
    standin, server = start(tmp_path, monkeypatch)
    server.stop()
    models = tmp_path / "models"
    models.mkdir()
    import shutil

    shutil.copy(pixel_model.model_path, models / "pixel.pt")
    ini = tmp_path / "fan-out.ini"
    ini.write_text((tmp_path / "wps.ini").read_text() + "fan_out_min_pixels = 1\nfan_out_parallelism = 1\n"
                                                       "fan_out_blocks = 2\n")
    standin.unpullable.add(CPU_IMAGE)
    server = WpsServer(tmp_path / "state", parallel=1,
                       extra=["--config", str(ini), "--data-root", f"models={models}"]).start()
    try:
        job_id, _, _ = execute(server, "classify_scene", {"model": "models/pixel.pt", "scene": "data/landsat7_chiapas/"
                                                          "LE70220491999322EDC01_stack.gtif", "tile_size": 64,
                                                          "device": "cpu"})
        final = wait_final(server, [job_id], timeout=120)[job_id]
        assert final["status"] == "failed"
        assert f"block 0 in Job geoml-wps-{job_id}-b0 failed: image pull failed" in final["message"], final
        assert CPU_IMAGE in final["message"]
        wait_for(lambda: f"geoml-wps-{job_id}-b0" in standin.deleted, timeout=30, what="the block Job removed")
        assert not any(m["metadata"]["name"].endswith("-b1") for m in standin.created)  # parallelism 1
    finally:
        server.stop()
        standin.close()


def test_cancel_of_a_fan_out_deletes_its_block_jobs(tmp_path, monkeypatch, pixel_model):
    """Cancel while the blocks run: the job is dismissed, its worker in the WPS stopped and the
    block Job deleted (its process killed); no further block starts."""
    import shutil

    import numpy as np
    import rasterio

    from conftest import SCENE_1999

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(pixel_model.model_path, models / "pixel.pt")
    with rasterio.open(SCENE_1999) as src:  # a bigger scene: the Chiapas scene mosaicked 8 x 8
        data, profile = src.read(), src.profile
    profile.update(height=2000, width=2000, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(models / "mosaic.tif", "w", **profile) as dst:
        dst.write(np.tile(data, (1, 8, 8)))
    standin, server = start(tmp_path, monkeypatch)
    server.stop()
    ini = tmp_path / "fan-out.ini"
    ini.write_text((tmp_path / "wps.ini").read_text() + "fan_out_min_pixels = 1000000\nfan_out_parallelism = 1\n"
                                                       "fan_out_blocks = 4\n")
    server = WpsServer(tmp_path / "state", parallel=1,
                       extra=["--config", str(ini), "--data-root", f"models={models}"]).start()
    try:
        job_id, loc, _ = execute(server, "classify_scene", {"model": "models/pixel.pt", "scene": "models/mosaic.tif",
                                                            "method": "patch", "device": "cpu"})
        first = f"geoml-wps-{job_id}-b0"
        wait_for(lambda: first in standin.runs and standin.runs[first].proc is not None, timeout=120,
                 what="the first block Job running")
        r = requests.post(f"{server.url}/jobs/{job_id}/cancel", timeout=60)
        assert r.status_code == 200, r.text
        wait_for(lambda: first in standin.deleted, timeout=30, what="the running block Job deleted by the cancel")
        final = wait_final(server, [job_id], timeout=60)[job_id]
        assert final["status"] == "dismissed", final
        time.sleep(3)  # the worker was stopped: no further block Job comes
        assert [m["metadata"]["name"] for m in standin.created
                if m["metadata"]["labels"].get("geoml-hub/fan-out-of") == job_id] == [first]
    finally:
        server.stop()
        standin.close()
