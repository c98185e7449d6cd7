"""geoml_hub.client against a real ``geoml-hub wps serve`` on the real data (no mocks of PyWPS).

One server serves the whole module. Some tests put a small recording proxy in front of it
(a ``http.server`` thread) to see the headers the client sends and to break status
documents on purpose; the server itself is untouched.
"""

from __future__ import annotations

import http.server
import inspect
import json
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import pytest
import requests

from conftest import CHIAPAS_COUNTS, EUROSAT_COUNTS
from helpers import PNG_MAGIC, assert_png, read_csv_rows, read_json
from wps_server import WpsServer

from geoml_hub.client import ENV_TOKEN, ENV_URL, Client, Job, JobStatus, Result, WPSError, WPSJobError
from geoml_hub.errors import GeomlError

pytestmark = pytest.mark.slow

LABELS = "data/landsat7_chiapas/training_data.gtif"


# -- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    with WpsServer(tmp_path_factory.mktemp("wps-client") / "state", parallel=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("client-downloads")


@pytest.fixture(scope="module")
def client(server, downloads) -> Client:
    return Client(server.url, token="test-token", progress=False, download_dir=downloads, poll_interval=0.5)


def outputs_dir(server) -> Path:
    return server.state_dir / "outputs"


def need(client: Client, *processes: str) -> None:
    missing = [p for p in processes if p not in client.processes]
    if missing:
        pytest.skip(f"the server has no process {', '.join(missing)} yet (processes/ is being finished)")


# -- a recording, fault-injecting proxy ----------------------------------------------------------------

class Proxy:
    """Forwards every request to ``upstream`` unchanged and records (method, path, headers).

    ``status_faults`` is a list of faults applied, one each, to the next GETs of a status
    document (``/outputs/<job>.xml``): ``'empty'`` (200, no body), ``'truncated'`` (200, the
    first half of the real document) or an HTTP status code. Paths under ``/broken/``
    always answer 200 with an empty body.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.records = []
        self.status_faults = []
        self.served_faults = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.records.append((self.command, self.path, dict(self.headers)))
                path = urllib.parse.urlsplit(self.path).path
                if path.startswith("/broken/"):
                    return self._send(200, b"", "text/xml")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = requests.request(self.command, proxy.upstream + self.path, data=body, headers=headers,
                                     timeout=60, allow_redirects=False)
                content, ctype = r.content, r.headers.get("Content-Type", "application/octet-stream")
                if self.command == "GET" and path.startswith("/outputs/") and path.endswith(".xml"):
                    with proxy.lock:
                        fault = proxy.status_faults.pop(0) if proxy.status_faults else None
                        if fault is not None:
                            proxy.served_faults.append(fault)
                    if fault == "empty":
                        return self._send(200, b"", ctype)
                    if fault == "truncated":
                        return self._send(200, content[: len(content) // 2], ctype)
                    if isinstance(fault, int):
                        return self._send(fault, b"<html>proxy error</html>", "text/html")
                self._send(r.status_code, content, ctype)

            def _send(self, code, content, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = _forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "Proxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- QC through the client -------------------------------------------------------------------------------

def test_validate_identical_rasters(client, server, downloads):
    t0 = time.monotonic()
    r = client.validate_classification(classification=LABELS, reference=LABELS)
    print(f"validate_classification via the client: {time.monotonic() - t0:.1f} s, job {r.job_id}")
    assert isinstance(r, Result) and isinstance(r, Mapping) and set(r) >= {"summary", "heatmap", "kappa"}
    assert r.overall_accuracy == 1.0 and r["kappa"] == 1.0
    assert isinstance(r.overall_accuracy, float) and isinstance(r.n, int)
    assert r.n == sum(CHIAPAS_COUNTS.values()) == 718
    server_summary = read_json(outputs_dir(server) / r.job_id / "summary.json")
    assert isinstance(r.summary, dict) and r.summary == server_summary
    assert r.summary["overall_accuracy"] == r.overall_accuracy and r.summary["kappa"] == r.kappa
    heatmap = r.heatmap
    assert isinstance(heatmap, Path) and heatmap.parent == downloads / r.job_id
    assert_png(heatmap)
    assert heatmap.read_bytes() == (outputs_dir(server) / r.job_id / heatmap.name).read_bytes()
    assert "PyCM Report" in r.report.read_text(encoding="utf-8")
    assert r.dataset("heatmap") == f"jobs/{r.job_id}/{heatmap.name}"
    assert r.url("summary").startswith(server.url + "/outputs/")
    assert set(r.literals) == {"overall_accuracy", "kappa", "n"}
    cm = r.pycm  # PyCM's object file, downloaded and loaded
    assert cm.Overall_ACC == 1.0 and sum(cm.P.values()) == 718
    assert "overall_accuracy=1.0" in repr(r)


def test_discovery_help_and_signature(client, server):
    for url in (server.url, server.url + "/", server.wps_url):
        c = Client(url, progress=False)
        assert c.wps_url == server.wps_url
        assert "validate_classification" in dir(c)
    names = dir(client)
    for p in ("validate_classification", "train_model", "balance_samples", "evaluate_model"):
        assert p in names and p in client.processes
    doc = client.train_model.__doc__
    assert "epochs : int, optional" in doc and "Default: 60." in doc and "Allowed: 1 to 500 epochs." in doc
    assert "device : {'auto', 'cpu', 'cuda'}, optional" in doc
    assert "samples : str\n" in doc and "Returns" in doc and "WPSJobError" in doc
    sig = inspect.signature(client.train_model)
    assert sig.parameters["samples"].default is inspect.Parameter.empty
    assert sig.parameters["epochs"].default == 60 and sig.parameters["augment"].default is True
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        client.train_model(samples="data/eurosat_ms", epoch=2)
    with pytest.raises(TypeError, match="missing required keyword argument: 'samples'"):
        client.train_model(epochs=2)
    with pytest.raises(TypeError, match="epochs expects an integer"):
        client.train_model(samples="data/eurosat_ms", epochs=2.5)
    with pytest.raises(AttributeError, match="no process 'trian_model'"):
        client.trian_model  # noqa: B018
    with pytest.raises(WPSError, match=ENV_URL):
        Client(url="")


# -- the main pipeline on EuroSAT ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(client):
    """balance_samples -> train_model (2 epochs, progress recorded) on data/eurosat_ms."""
    need(client, "balance_samples", "train_model")
    t0 = time.monotonic()
    bal = client.balance_samples(samples="data/eurosat_ms", step=2, seed=0)
    t1 = time.monotonic()
    seen = []
    fit = client.train_model(samples=bal.dataset("manifest"), family="cnn", epochs=2, batch_size=32, seed=0,
                             device="cpu",
                             progress=lambda fraction, message: seen.append((fraction, message)))
    t2 = time.monotonic()
    print(f"balance_samples {t1 - t0:.1f} s, train_model {t2 - t1:.1f} s")
    return bal, fit, seen


def test_balance(pipeline, server):
    bal, _, _ = pipeline
    total = sum(EUROSAT_COUNTS.values())
    print(f"balance: {bal.samples_before} -> {bal.samples_after} samples, class ratio {bal.ratio_before:.2f} -> "
          f"{bal.ratio_after:.2f}")
    assert bal.samples_before == total and bal.n_classes == 10
    assert bal.samples_after < bal.samples_before
    assert bal.summary == read_json(outputs_dir(server) / bal.job_id / "summary.json")
    assert bal.dataset("manifest") == f"jobs/{bal.job_id}/manifest.csv"


def test_train_progress(pipeline, client):
    _, fit, seen = pipeline
    print(f"train: {fit.epochs_run} epochs, best {fit.best_epoch}, val OA {fit.val_overall_accuracy:.3f}, "
          f"{fit.n_train} train / {fit.n_val} val samples on {fit.device}, {fit.seconds:.1f} s; "
          f"{len(seen)} progress updates")
    assert fit.epochs_run == 2 and 1 <= fit.best_epoch <= 2 and fit.device == "cpu"
    assert 0.0 <= fit.val_overall_accuracy <= 1.0
    assert fit.dataset("model") == f"jobs/{fit.job_id}/model.pt"
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    intermediate = [(f, m) for f, m in seen if 0.0 < f < 1.0]
    assert intermediate, f"no intermediate progress seen: {seen}"
    assert any("epoch" in m for _, m in intermediate), seen
    info = client.job(fit.job_id).info()
    assert info["status"] == "succeeded" and info["percent"] == 100.0 and info["process"] == "train_model"


def test_evaluate(pipeline, client, server, tmp_path):
    need(client, "evaluate_model")
    _, fit, _ = pipeline
    qc = client.evaluate_model(model=fit.dataset("model"), samples="data/eurosat_ms", device="cpu")
    print(f"evaluate_model on data/eurosat_ms: overall accuracy {qc.overall_accuracy:.3f}, kappa {qc.kappa:.3f}, "
          f"n {qc.n}")
    assert qc.n == sum(EUROSAT_COUNTS.values())
    summary = qc.summary
    assert summary == read_json(outputs_dir(server) / qc.job_id / "summary.json")
    assert qc.overall_accuracy == pytest.approx(summary["overall_accuracy"])
    assert qc.kappa == pytest.approx(summary["kappa"])
    assert qc.n == summary["n"]
    assert 0.0 <= qc.overall_accuracy <= 1.0
    assert_png(qc.heatmap)
    assert qc.predictions.read_text(encoding="utf-8").count("\n") >= qc.n
    rows = read_csv_rows(qc.predictions)
    assert len(rows) == qc.n
    cm = qc.pycm
    assert sum(cm.P.values()) == qc.n
    assert cm.Overall_ACC == pytest.approx(qc.overall_accuracy)
    assert float(cm.Kappa) == pytest.approx(qc.kappa)


def test_check_compatibility(pipeline, client, server):
    """The client's method for the check_compatibility process: a EuroSAT model fits its tree, not the
    Landsat scene (13 Sentinel-2 bands mapped onto the 8 Landsat bands by role)."""
    need(client, "check_compatibility")
    _, fit, _ = pipeline
    ok = client.check_compatibility(model=fit.dataset("model"), samples="data/eurosat_ms", device="cpu")
    assert ok.compatible == "compatible" and ok.reason.startswith("compatible")
    assert ok.summary == read_json(outputs_dir(server) / ok.job_id / "summary.json")
    assert ok.summary["compatible"] is True and ok.summary["kind"] == "samples"
    assert_png(ok.figure)
    bad = client.check_compatibility(model=fit.dataset("model"), device="cpu",
                                     scene="data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif",
                                     band_map="1,1,2,3,3,3,4,4,4,7,5,6,4")
    assert bad.compatible == "not compatible" and bad.summary["compatible"] is False
    assert bad.reason == bad.summary["reason"] and "outside the training range" in bad.reason


# -- environment defaults, the token header, retries ---------------------------------------------------

def test_env_defaults_and_token_header(server, monkeypatch, tmp_path):
    with Proxy(server.url) as proxy:
        monkeypatch.setenv(ENV_URL, proxy.url)
        monkeypatch.setenv(ENV_TOKEN, "secret-token-123")
        c = Client(progress=False, download_dir=tmp_path)
        assert c.url == proxy.url and c.headers["Authorization"] == "token secret-token-123"
        r = c.validate_classification(classification=LABELS, reference=LABELS)
        assert r.kappa == 1.0
        assert r.heatmap.read_bytes()[:8] == PNG_MAGIC
        assert r.summary["n"] == 718
        assert r.url("heatmap").startswith(proxy.url + "/outputs/")  # the server's own URL mapped to the proxy
        jobs = c.jobs(limit=5)
        assert any(j["job_id"] == r.job_id for j in jobs)
        records = list(proxy.records)
    paths = [(m, urllib.parse.urlsplit(p).path, urllib.parse.urlsplit(p).query) for m, p, _ in records]
    assert any("GetCapabilities" in q for _, _, q in paths)
    assert any("DescribeProcess" in q for _, _, q in paths)
    assert ("POST", "/wps", "") in paths
    assert any(m == "GET" and p == f"/outputs/{r.job_id}.xml" for m, p, _ in paths)
    assert any(m == "GET" and p.startswith(f"/outputs/{r.job_id}/") for m, p, _ in paths)
    assert any(p == "/jobs" for _, p, _ in paths)
    missing = [(m, p) for m, p, h in records if h.get("Authorization") != "token secret-token-123"]
    assert not missing, f"requests without the token header: {missing}"
    monkeypatch.delenv(ENV_URL)
    with pytest.raises(WPSError, match=f"set the environment variable {ENV_URL}") as err:
        Client()
    assert isinstance(err.value, GeomlError) and "\n" not in str(err.value)


def test_status_document_retries(server, tmp_path):
    with Proxy(server.url) as proxy:
        c = Client(proxy.url, progress=False, download_dir=tmp_path, poll_interval=0.2)
        proxy.status_faults[:] = ["empty", "truncated", 503, "empty"]
        r = c.validate_classification(classification=LABELS, reference=LABELS)
        assert proxy.served_faults == ["empty", "truncated", 503, "empty"]
        assert r.overall_accuracy == 1.0 and r.n == 718
        # a status location that never gets better: a bounded number of tries, then a clear error
        c2 = Client(proxy.url, progress=False, retries=2)
        job = c2.job(proxy.url + "/broken/0123456789abcdef.xml")
        t0 = time.monotonic()
        with pytest.raises(WPSError, match=r"empty document \(after 3 attempts\)"):
            job.status()
        assert time.monotonic() - t0 < 5
        broken = [p for _, p, _ in proxy.records if p.startswith("/broken/")]
        assert len(broken) == 3


# -- errors, wait=False, cancel --------------------------------------------------------------------------

def test_invalid_inputs_raise_with_the_servers_message(client):
    with pytest.raises(WPSJobError, match="input epochs: 0 is not allowed; allowed: from 1 to 500") as err:
        client.train_model(samples="data/eurosat_ms", epochs=0)
    assert err.value.code == "InvalidParameterValue" and err.value.locator == "epochs" and err.value.job_id is None
    with pytest.raises(WPSJobError, match="path traversal is not allowed"):
        client.validate_classification(classification="data/../../etc/passwd", reference=LABELS)
    with pytest.raises(WPSJobError, match="does not exist"):
        client.validate_classification(classification="data/no_such_file.tif", reference=LABELS)


def test_failed_job_raises(client):
    # an existing file that is no GeoTIFF: accepted (the dataset exists), then the job fails
    with pytest.raises(WPSJobError, match="not a GeoTIFF") as err:
        client.validate_classification(classification="data/eurosat_ms/MANIFEST.csv", reference=LABELS)
    e = err.value
    print(f"failed job message: {e.message}")
    assert e.state == "failed" and e.job_id and e.code is None
    assert client.job(e.job_id).info()["status"] == "failed"


def test_wait_false_and_job_handles(client):
    job = client.validate_classification(classification=LABELS, reference=LABELS, wait=False)
    assert isinstance(job, Job) and job.status_location.endswith(f"/outputs/{job.job_id}.xml")
    st = job.status()
    assert isinstance(st, JobStatus) and st.state in ("accepted", "running", "succeeded")
    r = job.wait()
    assert r.kappa == 1.0 and job.status().state == "succeeded" and job.done
    again = client.job(job.job_id)
    assert again.process == "validate_classification"
    r2 = again.wait()
    assert r2.summary == r.summary and r2.heatmap == r.heatmap
    by_url = client.job(job.status_location)
    assert by_url.status().succeeded and by_url.process == "validate_classification"
    assert any(j["job_id"] == job.job_id for j in client.jobs(status="succeeded"))


def test_cancel_running_training(client):
    need(client, "train_model")
    job = client.train_model(samples="data/eurosat_ms", family="cnn", epochs=500, patience=500, device="cpu",
                             wait=False)
    t0, deadline = time.monotonic(), time.monotonic() + 60
    while True:
        st = job.status()
        if st.state == "running" or st.done:
            break
        assert time.monotonic() < deadline, f"training did not start: {st}"
        time.sleep(0.2)
    print(f"train_model running after {time.monotonic() - t0:.1f} s")
    assert st.state == "running", st
    t0 = time.monotonic()
    assert job.cancel() is True
    print(f"cancelled train_model at {st.percent}% ({st.message}) in {time.monotonic() - t0:.1f} s")
    st = job.status()
    assert st.state == "dismissed" and st.done, st
    assert job.info()["status"] == "dismissed"
    with pytest.raises(WPSJobError, match="dismissed") as err:
        job.wait()
    assert err.value.state == "dismissed"
    assert client.cancel(job.job_id) is False  # already ended


# -- standard clients work too ---------------------------------------------------------------------------

def test_plain_owslib(server):
    from owslib.wps import ASYNC, WebProcessingService, monitorExecution

    wps = WebProcessingService(server.wps_url, version="1.0.0")
    assert "validate_classification" in [p.identifier for p in wps.processes]
    process = wps.describeprocess("validate_classification")
    outputs = [(o.identifier, o.dataType == "ComplexData", None) for o in process.processOutputs]
    execution = wps.execute("validate_classification", [("classification", LABELS), ("reference", LABELS)],
                            output=outputs, mode=ASYNC)
    assert execution.statusLocation and execution.status in ("ProcessAccepted", "ProcessStarted")
    monitorExecution(execution, sleepSecs=0.5)
    assert execution.isSucceded(), [e.text for e in execution.errors]
    values = {o.identifier: (o.data, o.reference) for o in execution.processOutputs}
    assert values["overall_accuracy"][0] == ["1.0"] and values["kappa"][0] == ["1.0"]
    summary = json.loads(requests.get(values["summary"][1], timeout=30).text)
    assert summary["overall_accuracy"] == 1.0 and summary["n"] == 718
