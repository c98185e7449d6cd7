"""A real ``geoml-hub wps serve`` on loopback for the tests (no mocks of PyWPS).

``WpsServer(state_dir, ...)`` starts the installed console script in its own process
group on a free port, waits until it answers, and stops it (gracefully, or with
``kill(signal.SIGKILL)`` to simulate a crash). The same state directory can be served
again to test restarts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional

import requests

from helpers import CONSOLE_SCRIPT, DATA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WpsServer:
    """A ``geoml-hub wps serve`` subprocess.

    Parameters
    ----------
    state_dir : path
        The server's state directory (kept between restarts).
    parallel : int
        ``--parallel`` (parallelprocesses).
    database : str, optional
        ``--database`` URL (default: SQLite file in the state directory).
    server : str
        ``gunicorn`` or ``werkzeug``.
    extra : list of str
        More command-line options.
    """

    def __init__(self, state_dir, parallel: int = 2, database: Optional[str] = None, server: str = "gunicorn",
                 extra: Optional[List[str]] = None, port: Optional[int] = None):
        self.state_dir = Path(state_dir)
        self.parallel = parallel
        self.database = database
        self.server = server
        self.extra = list(extra or [])
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def wps_url(self) -> str:
        return self.url + "/wps"

    def start(self, timeout: float = 60.0) -> "WpsServer":
        ready = self.state_dir.parent / f"{self.state_dir.name}-{self.port}.ready"
        if ready.exists():
            ready.unlink()
        cmd = [str(CONSOLE_SCRIPT), "wps", "serve", "--port", str(self.port), "--state-dir", str(self.state_dir),
               "--data-root", f"data={DATA}", "--parallel", str(self.parallel), "--server", self.server,
               "--ready-file", str(ready)] + self.extra
        if self.database:
            cmd += ["--database", self.database]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"WPS server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if ready.exists():
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                        if r.status == 200:
                            return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"WPS server did not start in {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM), as an admin or ``geoml-hub down`` would."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self, whole_group: bool = True) -> None:
        """kill -9 the server; with ``whole_group`` also every process of its group (its job
        workers run in their own sessions and survive unless killed separately)."""
        if self.proc is None:
            return
        try:
            if whole_group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def __enter__(self) -> "WpsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- helpers of the WPS tests (shared: no test module imports another) -------------------------
NS = {"wps": "http://www.opengis.net/wps/1.0.0", "ows": "http://www.opengis.net/ows/1.1"}
CHIAPAS_LABELS = "data/landsat7_chiapas/training_data.gtif"
EUROSAT = "data/eurosat_ms"


# -- helpers --------------------------------------------------------------------------------
def execute(server, identifier, inputs, async_=True, expect_ok=True):
    """GET Execute; returns (job id, status location, response)."""
    parts = []
    for k, v in inputs.items():
        for item in (v if isinstance(v, list) else [v]):
            parts.append(f"{k}={urllib.parse.quote(str(item), safe='/:')}")
    params = {"service": "WPS", "request": "Execute", "version": "1.0.0", "identifier": identifier}
    if async_:
        params.update(storeExecuteResponse="true", status="true")
    url = server.wps_url + "?" + urllib.parse.urlencode(params) + "&DataInputs=" + ";".join(parts)
    r = requests.get(url, timeout=60)
    if not expect_ok:
        return None, None, r
    assert r.status_code == 200, r.text[:2000]
    root = ET.fromstring(r.content)
    assert root.tag.endswith("ExecuteResponse"), r.text[:2000]
    loc = root.get("statusLocation")
    job_id = Path(urllib.parse.urlparse(loc).path).stem if loc else None
    return job_id, loc, r


def status_of(doc: bytes):
    """(status element name, percent or None, message) of a status document."""
    root = ET.fromstring(doc)
    st = root.find("wps:Status", NS)
    child = list(st)[0]
    name = child.tag.split("}")[1]
    pct = child.get("percentCompleted")
    text = child.text or ""
    if name == "ProcessFailed":
        text = root.find(".//ows:ExceptionText", NS).text
    return name, (int(pct) if pct is not None else None), text


def job(server, job_id):
    r = requests.get(f"{server.url}/jobs/{job_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_final(server, job_ids, timeout=180.0, watch=None):
    """Wait until every job is succeeded/failed/dismissed; ``watch(jobs)`` is called each poll."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j: job(server, j) for j in job_ids}
        if watch:
            watch(jobs)
        if all(v["status"] in ("succeeded", "failed", "dismissed") for v in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not finished after {timeout} s: {jobs}\n{server.log_text()[-3000:]}")
        time.sleep(0.2)


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def db_job(state_dir, database, job_id):
    from geoml_hub.wps.jobs.store import JobStore

    store = JobStore(database or f"sqlite:///{Path(state_dir).resolve() / 'log.sqlite'}")
    try:
        return store.get(job_id)
    finally:
        store.dispose()


def alive(pid):
    from geoml_hub.wps.jobs.store import process_start_ticks

    return process_start_ticks(pid) is not None
