"""The WPS server as users meet it: a real ``geoml-hub wps serve`` (gunicorn) on loopback.

Covers the async flow with progress, atomic status documents, restart after kill -9,
20 concurrent submissions, cancel, graceful-stop re-queueing, output retention, request
size limits, and owners — against SQLite and a real PostgreSQL as the job database.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

from wps_server import (CHIAPAS_LABELS, EUROSAT, NS, WpsServer, alive, db_job, execute, job, status_of,  # noqa: F401
                        wait_final, wait_for)

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with WpsServer(tmp_path_factory.mktemp("wps") / "state", parallel=2) as s:
        yield s


# -- the async flow ---------------------------------------------------------------------------
def test_standalone_mode_is_explicit(server):
    log = server.log_text()
    assert "NOT authenticated" in log
    caps = requests.get(server.wps_url, params={"service": "WPS", "request": "GetCapabilities"}, timeout=30)
    assert caps.status_code == 200
    ids = [e.text for e in ET.fromstring(caps.content).findall(".//wps:Process/ows:Identifier", NS)]
    assert ids == ["extract_samples", "balance_samples", "train_model", "evaluate_model", "check_compatibility",
                   "classify_scene",
                   "validate_classification", "compare_classifications"]


def test_async_training_reports_progress_and_outputs(server):
    job_id, loc, first = execute(server, "train_model", {"samples": EUROSAT, "family": "cnn", "epochs": 3, "patience": 50})
    assert status_of(first.content)[0] == "ProcessAccepted"
    seen, bad = [], []

    def poll():  # a tight poller: a status document must never be empty or half-written
        while True:
            r = requests.get(loc, timeout=30)
            try:
                name, pct, msg = status_of(r.content)
            except ET.ParseError:
                bad.append(r.content[:200])
                continue
            if not seen or seen[-1] != (name, pct, msg):
                seen.append((name, pct, msg))
            if name in ("ProcessSucceeded", "ProcessFailed"):
                return
            time.sleep(0.02)

    t = threading.Thread(target=poll)
    t.start()
    t.join(180)
    assert not bad, f"unreadable status documents: {bad[:3]}"
    names = [s[0] for s in seen]
    assert names[-1] == "ProcessSucceeded", seen
    assert "ProcessStarted" in names
    started = [s for s in seen if s[0] == "ProcessStarted"]
    assert any(0 < s[1] < 100 for s in started), seen
    assert any("epoch" in s[2] for s in started), seen
    pcts = [s[1] for s in started]
    assert pcts == sorted(pcts), f"progress went backwards: {pcts}"
    # outputs: literals in the document, files by reference, fetched over HTTP
    root = ET.fromstring(requests.get(loc, timeout=30).content)
    assert root.get("statusLocation") == loc  # the final document still says where it lives
    outs = {o.find("ows:Identifier", NS).text: o for o in root.findall(".//wps:Output", NS)}
    assert int(outs["epochs_run"].find(".//wps:LiteralData", NS).text) == 3
    href = outs["model"].find("wps:Reference", NS).get("href")
    assert href.startswith(f"{server.url}/outputs/{job_id}/")
    r = requests.get(href, timeout=30)
    assert r.status_code == 200 and len(r.content) > 10000
    curves = requests.get(outs["curves"].find("wps:Reference", NS).get("href"), timeout=30)
    assert curves.content[:8] == b"\x89PNG\r\n\x1a\n"
    rec = job(server, job_id)
    assert rec["status"] == "succeeded" and rec["owner"] == "local" and rec["percent"] == 100.0
    assert rec["job_id"] in [j["job_id"] for j in requests.get(server.url + "/jobs", timeout=30).json()["jobs"]]
    # the working directory is gone, the outputs stay
    assert not (server.state_dir / "work" / job_id).exists()
    assert (server.state_dir / "outputs" / job_id / "model.pt").is_file()


def test_bad_dataset_is_rejected_before_queueing(server):
    before = len(requests.get(server.url + "/jobs", timeout=30).json()["jobs"])
    _, _, r = execute(server, "train_model", {"samples": "data/../../etc", "epochs": 1}, expect_ok=False)
    assert r.status_code == 400 and b"path traversal" in r.content
    _, _, r = execute(server, "train_model", {"samples": "/etc/passwd"}, expect_ok=False)
    assert r.status_code == 400 and b"not a server path" in r.content
    assert len(requests.get(server.url + "/jobs", timeout=30).json()["jobs"]) == before


def test_oversized_request_is_refused(server):
    body = b"<wps:Execute " + b"x" * (4 * 1024 * 1024) + b"/>"
    r = requests.post(server.wps_url, data=body, headers={"Content-Type": "text/xml"}, timeout=60)
    assert 400 <= r.status_code < 500
    assert b"ExceptionReport" in r.content and b"size" in r.content.lower()


def test_outputs_cannot_escape(server):
    for path in ("/outputs/../pywps.cfg", "/outputs/%2e%2e/pywps.cfg", "/outputs/..%2flog.sqlite",
                 "/outputs/not-a-job/x"):
        r = requests.get(server.url + path, timeout=30)
        assert r.status_code in (400, 403, 404), (path, r.status_code)
        assert b"[logging]" not in r.content and b"SQLite" not in r.content


# -- concurrency, restart, cancel -----------------------------------------------------------------
def test_twenty_concurrent_jobs_all_finish(tmp_path, database):
    with WpsServer(tmp_path / "state", parallel=2, database=database) as server:
        responses = [None] * 20

        def submit(k):
            responses[k] = execute(server, "validate_classification",
                                   {"classification": CHIAPAS_LABELS, "reference": CHIAPAS_LABELS})

        threads = [threading.Thread(target=submit, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(r is not None for r in responses)
        for _, _, r in responses:
            assert b"ServerBusy" not in r.content
            assert status_of(r.content)[0] == "ProcessAccepted"
        ids = [r[0] for r in responses]
        assert len(set(ids)) == 20
        peak = []

        def running_now(_):  # one query, one snapshot of the job table
            listed = requests.get(server.url + "/jobs", params={"status": "running"}, timeout=30).json()["jobs"]
            peak.append(len(listed))

        jobs = wait_final(server, ids, timeout=300, watch=running_now)
        assert all(v["status"] == "succeeded" for v in jobs.values()), jobs
        assert max(peak) <= 2, f"more than parallelprocesses=2 jobs ran at once: {max(peak)}"
        for job_id, loc, _ in responses:
            name, _, _ = status_of(requests.get(loc, timeout=30).content)
            assert name == "ProcessSucceeded"


def test_restart_after_kill_9(tmp_path, database):
    state = tmp_path / "state"
    # --job-retries 0: the killed job fails at once (test_wps_robustness.py: the default retries it)
    server = WpsServer(state, parallel=1, database=database, extra=["--job-retries", "0"]).start()
    try:
        long_id, long_loc, _ = execute(server, "train_model", {"samples": EUROSAT, "family": "cnn", "epochs": 300, "patience": 300})
        queued = [execute(server, "validate_classification",
                          {"classification": CHIAPAS_LABELS, "reference": CHIAPAS_LABELS})[0] for _ in range(3)]
        rec = wait_for(lambda: (lambda j: j if j and j.pid else None)(db_job(state, database, long_id)),
                       what="the training job's worker")
        assert [job(server, q)["status"] for q in queued] == ["queued"] * 3
    finally:
        server.kill()            # kill -9 the server ...
    os.kill(rec.pid, signal.SIGKILL)  # ... and the running job's worker (as a node crash would)
    wait_for(lambda: not alive(rec.pid), what="the worker to die")
    assert db_job(state, database, long_id).state == "running"  # what PyWPS would leave forever
    with WpsServer(state, parallel=1, database=database, port=server.port,
                   extra=["--job-retries", "0"]) as server2:
        jobs = wait_final(server2, [long_id] + queued, timeout=180)
        assert jobs[long_id]["status"] == "failed"
        assert "worker died" in jobs[long_id]["message"]
        assert all(jobs[q]["status"] == "succeeded" for q in queued), jobs
        name, _, text = status_of(requests.get(long_loc, timeout=30).content)
        assert name == "ProcessFailed" and "worker died" in text
        assert not (state / "outputs" / long_id).exists()


def test_worker_survives_a_server_crash(tmp_path):
    state = tmp_path / "state"
    server = WpsServer(state, parallel=1).start()
    try:
        job_id, loc, _ = execute(server, "train_model", {"samples": EUROSAT, "family": "cnn", "epochs": 4, "patience": 50})
        rec = wait_for(lambda: (lambda j: j if j and j.pid else None)(db_job(state, None, job_id)),
                       what="the worker")
    finally:
        server.kill()  # the server dies; its job worker runs in its own session and goes on
    assert alive(rec.pid)
    with WpsServer(state, parallel=1, port=server.port) as server2:  # it adopts the running worker
        jobs = wait_final(server2, [job_id], timeout=180)
        assert jobs[job_id]["status"] == "succeeded", jobs
        assert status_of(requests.get(loc, timeout=30).content)[0] == "ProcessSucceeded"


def test_cancel_running_training(server):
    job_id, loc, _ = execute(server, "train_model", {"samples": EUROSAT, "family": "cnn", "epochs": 400, "patience": 400})
    wait_for(lambda: job(server, job_id)["percent"] > 0, timeout=120, what="training progress")
    rec = db_job(server.state_dir, None, job_id)
    assert rec.pid and alive(rec.pid)
    r = requests.post(f"{server.url}/jobs/{job_id}/cancel", timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "dismissed" and "cancelled by local" in body["message"]
    assert not alive(rec.pid), "the worker still runs after cancel"
    name, _, text = status_of(requests.get(loc, timeout=30).content)
    assert name == "ProcessFailed" and "dismissed" in text
    assert not (server.state_dir / "outputs" / job_id).exists()
    assert not (server.state_dir / "work" / job_id).exists()
    # cancelling again is a conflict, and a finished job stays as it is
    again = requests.post(f"{server.url}/jobs/{job_id}/cancel", timeout=30)
    assert again.status_code == 409


def test_graceful_stop_requeues_and_restart_resumes(tmp_path):
    state = tmp_path / "state"
    server = WpsServer(state, parallel=1).start()
    job_id, _, _ = execute(server, "train_model", {"samples": EUROSAT, "family": "cnn", "epochs": 400, "patience": 400})
    rec = wait_for(lambda: (lambda j: j if j and j.pid else None)(db_job(state, None, job_id)), what="the worker")
    server.stop()
    assert not alive(rec.pid)
    after = db_job(state, None, job_id)
    assert after.state == "queued" and "re-queued" in after.message
    with WpsServer(state, parallel=1, port=server.port) as server2:
        wait_for(lambda: job(server2, job_id)["status"] == "running", what="the re-queued job to start")
        r = requests.post(f"{server2.url}/jobs/{job_id}/cancel", timeout=60)
        assert r.json()["status"] == "dismissed"


def test_retention_removes_old_outputs(tmp_path):
    # 0.0005 h = 1.8 s
    with WpsServer(tmp_path / "state", parallel=1, extra=["--retention-hours", "0.0005"]) as server:
        job_id, loc, _ = execute(server, "validate_classification",
                                 {"classification": CHIAPAS_LABELS, "reference": CHIAPAS_LABELS})
        wait_final(server, [job_id])
        summary_url = f"{server.url}/outputs/{job_id}/summary.json"
        assert requests.get(summary_url, timeout=30).status_code == 200
        rec = wait_for(lambda: (lambda j: j if j["outputs_removed"] else None)(job(server, job_id)), timeout=30,
                       what="retention")
        assert rec["status"] == "succeeded"
        assert not (server.state_dir / "outputs" / job_id).exists()
        assert requests.get(summary_url, timeout=30).status_code == 410
        assert requests.get(loc, timeout=30).status_code == 200  # the status document stays


def test_notebook_style_script_prints_the_qc_summary(server):
    """notebooks/wps_quickstart.py: extract -> balance -> train -> classify -> validate through the
    server with geoml_hub.client, configured only by GEOML_WPS_URL; prints the QC summary."""
    import json
    import re
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "notebooks" / "wps_quickstart.py"
    env = dict(os.environ, GEOML_WPS_URL=server.url, GEOML_DEMO_EPOCHS="3")
    env.pop("JUPYTERHUB_API_TOKEN", None)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"overall accuracy (\d\.\d{3})\s+kappa\s+(-?\d\.\d{3})\s+n (\d+)", out.stdout)
    assert m, out.stdout[-3000:]
    validations = [j for j in requests.get(server.url + "/jobs", timeout=30).json()["jobs"]
                   if j["process"] == "validate_classification" and j["status"] == "succeeded"]
    text = (server.state_dir / "outputs" / validations[0]["job_id"] / "summary.json").read_text()
    assert str(server.state_dir) not in text and "/shared/data" not in text  # dataset names, not server paths
    assert '"classification": "jobs/' in text and '"reference": "jobs/' in text
    summary = json.loads(text)
    assert float(m.group(1)) == round(summary["overall_accuracy"], 3)
    assert int(m.group(3)) == summary["n"] == 256  # the 14 held-out Chiapas regions
    assert "PPV (user's)" in out.stdout and "forest" in out.stdout
