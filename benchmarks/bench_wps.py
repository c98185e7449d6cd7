#!/usr/bin/env python
"""Benchmark 5 — WPS request overhead (ours vs bare PyWPS) and the drain time of 20 queued jobs.

**Overhead.** One trivial process, ``echo`` (a literal string input ``text``, a literal
string output ``text``, the handler copies one to the other), in two versions with the
same inputs, outputs, flags and handler: a plain ``pywps.Process`` and a
``geoml_hub.wps.ogc.process.GeomlProcess`` subclass. Two long-lived child processes serve it:

* ``bare``: ``pywps.Service(processes=[plain], cfgfiles=[cfg])`` with a hand-written PyWPS
  configuration equal to the one geoml-hub generates (same ``[server]``, ``[processing]``,
  ``[logging]`` level and metadata), logging database a SQLite file in a temporary directory;
* ``ours``: ``make_app(settings, build_service(settings, processes=[ours]))`` with
  ``Settings(state_dir=TMP)`` (job table and PyWPS logging database: a SQLite file), i.e.
  authenticator + routing + ``GeomlService`` + job table.

GetCapabilities, DescribeProcess (``identifier=echo``) and a synchronous Execute of
``echo`` (GET, response document) are sent A) in-process through ``werkzeug.test.Client``
(framework overhead only) and B) over HTTP to a werkzeug threaded server on loopback
(``make_server(..., threaded=True)`` in each child, the same server for both sides),
sequentially with one ``requests.Session`` per side. The parent interleaves batches
(bare, ours, ours, bare, ...) so that drift of a shared machine cancels; every batch gives
a median latency and the CPU time the serving process spent per request. The ratio
ours / bare is taken per round (batch medians at the same moment); reported are the median
of those per-round ratios (``ratio``), their range, a bootstrap 90 % interval of that median
(resampling rounds), the ratio of the pooled medians (``pooled``) and the ratio of CPU time
per request of the two serving processes (``CPU ratio``, less sensitive to other load).

**Drain.** A real ``geoml-hub wps serve --server gunicorn --parallel P`` on loopback with a
fresh state directory and ``--data-root data=DATA``: one warm-up job, then ``--single``
single ``validate_classification`` jobs (classification = reference =
``data/landsat7_chiapas/training_data.gtif``) each submitted to an idle server and polled
(``GET /jobs/<id>`` every ``--poll`` s) until succeeded; then 20 (``--jobs``) submitted
back to back and polled until all succeeded. Ideal = jobs / P x median single-job time.
Per-job queue wait and run time come from the job table (``geoml_jobs``).

    python benchmarks/bench_wps.py --quick          # ~1 min set-up check (too few rounds to judge the target)
    python benchmarks/bench_wps.py                  # full (the figures of docs/benchmarks.md)
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]
DATA = REPO.parent / "shared" / "data"
KINDS = ("capabilities", "describe", "execute")
SIDES = ("bare", "ours")
TARGET = 1.1
ECHO_TEXT = "hello-geoml"
CHIAPAS = "data/landsat7_chiapas/training_data.gtif"
QUERIES = {
    "capabilities": {"service": "WPS", "request": "GetCapabilities"},
    "describe": {"service": "WPS", "request": "DescribeProcess", "version": "1.0.0", "identifier": "echo"},
    "execute": {"service": "WPS", "request": "Execute", "version": "1.0.0", "identifier": "echo",
                "DataInputs": f"text={ECHO_TEXT}"},
}
#: what a correct answer contains (checked on every request)
EXPECT = {"capabilities": b"Capabilities", "describe": b"ProcessDescriptions", "execute": b"ProcessSucceeded"}


def add_args(p):
    p.add_argument("--quick", action="store_true", help="short run: 4 rounds of 10 requests, drain with 6 jobs")
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds per request type and transport")
    p.add_argument("--batch", type=int, default=25, help="requests per side per round")
    p.add_argument("--warmup", type=int, default=30, help="requests per side and type before measuring")
    p.add_argument("--skip-http", action="store_true", help="only the in-process comparison")
    p.add_argument("--skip-drain", action="store_true", help="only the overhead comparison")
    p.add_argument("--jobs", type=int, default=20, help="drain: jobs submitted back to back")
    p.add_argument("--parallel", default="2,1", help="drain: --parallel values to run (comma-separated)")
    p.add_argument("--single", type=int, default=5, help="drain: single jobs on an idle server (median)")
    p.add_argument("--poll", type=float, default=0.1, help="drain: seconds between status polls")
    p.add_argument("--data", type=Path, default=DATA, help=f"drain: the data root 'data' (default {DATA})")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return p


# ---------------------------------------------------------------------------
# child: one side of the overhead comparison, driven over stdin/stdout


def _echo_parts():
    from pywps import LiteralInput, LiteralOutput

    inputs = [LiteralInput("text", "Text", data_type="string")]
    outputs = [LiteralOutput("text", "Text", data_type="string")]
    return inputs, outputs


def echo_handler(request, response):
    response.outputs["text"].data = request.inputs["text"][0].data
    return response


ECHO = dict(identifier="echo", title="Echo", abstract="Copies its input to its output.", version="1.0",
            store_supported=True, status_supported=True)


def _bare_app(state: Path):
    from pywps import Process, Service

    inputs, outputs = _echo_parts()
    plain = Process(echo_handler, inputs=inputs, outputs=outputs, **ECHO)
    for d in ("outputs", "work"):
        (state / d).mkdir(parents=True, exist_ok=True)
    cfg = state / "pywps.cfg"
    # the options geoml-hub's Settings.render_pywps_cfg() writes, so both sides do the same PyWPS work
    cfg.write_text(f"""[metadata:main]
identification_title = geoml-hub WPS
identification_abstract = Training-sample balancing, PyTorch training, scene classification and PyCM quality control for satellite imagery.
identification_keywords = remote sensing,machine learning,classification,quality control,WPS
provider_name = geoml-hub

[server]
url = http://127.0.0.1:5000/wps
outputurl = http://127.0.0.1:5000/outputs/
outputpath = {state / 'outputs'}
workdir = {state / 'work'}
maxrequestsize = 3mb
parallelprocesses = 2
maxprocesses = 30
maxsingleinputsize = 1mb
allowedinputpaths =
cleantempdir = true
storage_copy_function = link
language = en-US

[processing]
mode = multiprocessing

[logging]
level = INFO
database = sqlite:///{state / 'log.sqlite'}
prefix = pywps_
""")
    return Service(processes=[plain], cfgfiles=[str(cfg)])


def _ours_app(state: Path):
    from geoml_hub.wps.http.app import make_app
    from geoml_hub.wps.ogc.process import GeomlProcess
    from geoml_hub.wps.ogc.service import build_service
    from geoml_hub.wps.settings import Settings

    class Echo(GeomlProcess):
        def __init__(self):
            inputs, outputs = _echo_parts()
            super().__init__(echo_handler, inputs=inputs, outputs=outputs, **ECHO)

    settings = Settings(state_dir=state, url="http://127.0.0.1:5000")
    return make_app(settings, build_service(settings, processes=[Echo()]))


def case_side(args) -> dict:
    """Serve one side; commands (JSON lines) on stdin, answers on the original stdout."""
    from werkzeug.test import Client

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by the libraries goes to the log, not into the protocol
    state = Path(args.state)
    app = _bare_app(state) if args.side == "bare" else _ours_app(state)
    client = Client(app)
    urls = {k: "/wps?" + urllib.parse.urlencode(q) for k, q in QUERIES.items()}
    httpd = None
    sizes = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "inproc":
            kind, n = cmd["kind"], cmd["n"]
            url, expect = urls[kind], EXPECT[kind]
            times = []
            c0 = time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                resp = client.get(url)
                body = resp.get_data()
                times.append(time.perf_counter() - t0)
                if resp.status_code != 200 or expect not in body or (kind == "execute" and ECHO_TEXT.encode() not in body):
                    raise RuntimeError(f"{args.side} {kind}: HTTP {resp.status_code}\n{body[:2000]!r}")
            sizes[kind] = len(body)
            answer = {"times": times, "cpu": time.process_time() - c0}
        elif op == "http":
            from werkzeug.serving import make_server
            import threading

            httpd = make_server("127.0.0.1", 0, app, threaded=True)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            answer = {"port": httpd.server_port}
        elif op == "cpu":
            answer = {"cpu": time.process_time()}
        elif op == "quit":
            break
        else:
            raise RuntimeError(f"unknown command {cmd}")
        proto.write(json.dumps(answer) + "\n")
    if httpd is not None:
        httpd.shutdown()
    result = {"side": args.side, "response_bytes": sizes}
    if args.side == "ours":  # the job table saw every sync Execute
        from geoml_hub.wps.jobs.store import store_for
        from geoml_hub.wps.settings import current_settings

        result["job_table_counts"] = store_for(current_settings().database).counts()
    return result


# ---------------------------------------------------------------------------
# child: drain of queued jobs on a real gunicorn server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``geoml-hub wps serve`` in its own process group (as tests/wps_server.py does)."""

    def __init__(self, state: Path, parallel: int, data: Path, log: Path):
        self.state, self.parallel, self.data, self.log_path = state, parallel, data, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        import requests

        self.ready = ready = self.state.parent / f"{self.state.name}.ready"
        ready.unlink(missing_ok=True)
        cmd = [str(Path(sys.executable).parent / "geoml-hub"), "wps", "serve", "--server", "gunicorn",
               "--parallel", str(self.parallel), "--port", str(self.port), "--state-dir", str(self.state),
               "--data-root", f"data={self.data}", "--ready-file", str(ready)]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            if ready.exists():
                try:
                    if requests.get(self.url + "/health", timeout=5).status_code == 200:
                        self.cmd = cmd
                        return self
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        self.ready.unlink(missing_ok=True)


def _submit(session, server: Server) -> str:
    import xml.etree.ElementTree as ET

    params = {"service": "WPS", "request": "Execute", "version": "1.0.0", "identifier": "validate_classification",
              "storeExecuteResponse": "true", "status": "true"}
    url = (server.url + "/wps?" + urllib.parse.urlencode(params) + "&DataInputs="
           + ";".join(f"{k}={urllib.parse.quote(CHIAPAS, safe='/:')}" for k in ("classification", "reference")))
    r = session.get(url, timeout=60)
    loc = ET.fromstring(r.content).get("statusLocation") if r.status_code == 200 else None
    if not loc:
        raise RuntimeError(f"submission refused: HTTP {r.status_code} {r.text[:2000]}")
    return Path(urllib.parse.urlparse(loc).path).stem


def _wait_all(session, server: Server, ids, poll: float, timeout: float = 900.0) -> dict:
    """Poll ``GET /jobs/<id>`` (pending jobs in submission order, stopping at the first that is not
    final) until every job is final; returns {id: (state, monotonic time it was seen final)}."""
    done = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids):
        for j in ids:
            if j in done:
                continue
            r = session.get(f"{server.url}/jobs/{j}", timeout=30)
            r.raise_for_status()
            state = r.json()["status"]
            if state in ("succeeded", "failed", "dismissed"):
                done[j] = (state, time.monotonic())
            else:
                break
        if len(done) < len(ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs not final after {timeout} s")
            time.sleep(poll)
    bad = {j: s for j, (s, _) in done.items() if s != "succeeded"}
    if bad:
        raise RuntimeError(f"jobs did not succeed: {bad}; see {server.log_path} and {server.state}/logs")
    return done


def _job_times(state: Path, ids) -> list:
    """created/started/finished of the jobs from the job table (seconds, relative to the first creation)."""
    con = sqlite3.connect(f"file:{state / 'log.sqlite'}?mode=ro", uri=True)
    try:
        rows = {r[0]: r[1:] for r in con.execute("SELECT uuid, created, started, finished FROM geoml_jobs")}
    finally:
        con.close()

    def ts(s):
        from datetime import datetime
        return datetime.fromisoformat(s).timestamp() if s else float("nan")

    out = [tuple(ts(v) for v in rows[j]) for j in ids]
    t0 = min(c for c, _, _ in out)
    return [{"created": c - t0, "started": s - t0, "finished": f - t0} for c, s, f in out]


def case_drain(args) -> dict:
    import requests

    parallel = int(args.parallel)
    state = Path(args.state)
    shutil.rmtree(state, ignore_errors=True)
    log = state.parent / "logs" / f"{state.name}-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    out = {"parallel": parallel, "jobs": args.jobs, "poll_seconds": args.poll}
    with Server(state, parallel, args.data, log) as server, requests.Session() as s:
        out["command"] = " ".join(server.cmd)
        t0 = time.monotonic()
        warm = _submit(s, server)
        _wait_all(s, server, [warm], args.poll)
        out["warmup_seconds"] = time.monotonic() - t0
        singles, single_ids = [], []
        for _ in range(args.single):
            time.sleep(1.0)  # the dispatcher and the server settle
            t0 = time.monotonic()
            j = _submit(s, server)
            _wait_all(s, server, [j], args.poll)
            singles.append(time.monotonic() - t0)
            single_ids.append(j)
        out["single_seconds"] = singles
        out["single_median_seconds"] = statistics.median(singles)
        out["single_job_table"] = _job_times(state, single_ids)
        time.sleep(1.0)
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        ids = []
        for _ in range(args.jobs):
            ids.append(_submit(s, server))
        out["submit_seconds"] = time.monotonic() - t0
        done = _wait_all(s, server, ids, args.poll)
        out["drain_seconds"] = max(t for _, t in done.values()) - t0
        out["load_average_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        table = _job_times(state, ids)
        out["job_table"] = table
        out["job_run_seconds"] = [r["finished"] - r["started"] for r in table]
        out["job_table_span_seconds"] = max(r["finished"] for r in table)  # first created -> last finished
        # a slot's turnover: from a job's end (job table) to the start of the job that took its slot
        starts, ends = sorted(r["started"] for r in table), sorted(r["finished"] for r in table)
        gaps = [starts[i + parallel] - ends[i] for i in range(len(table) - parallel)]
        out["turnover_gap_mean_seconds"] = statistics.mean(gaps) if gaps else float("nan")
        out["first_queue_wait_seconds"] = min(starts)
    out["ideal_seconds"] = args.jobs / parallel * out["single_median_seconds"]
    out["ratio_to_ideal"] = out["drain_seconds"] / out["ideal_seconds"]
    if not args.keep_data:
        shutil.rmtree(state, ignore_errors=True)
    return out


CASES = {"side": case_side, "drain": case_drain}


# ---------------------------------------------------------------------------
# parent


class Side:
    """A ``--case side`` child and its command pipe."""

    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.state = workdir / f"wps-overhead-{name}-{os.getpid()}"
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)
        logs = workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.result_file = logs / f"wps-side-{name}-{os.getpid()}.json"
        self.err_path = logs / f"wps-side-{name}-{os.getpid()}.err"
        self.err = open(self.err_path, "wb")
        cmd = [sys.executable, str(SCRIPT), "--case", "side", "--side", name, "--state", str(self.state),
               "--result-file", str(self.result_file), "--workdir", str(workdir)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, bufsize=1, cwd=str(SCRIPT.parent))

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"side {self.name} died (exit {self.proc.returncode}):\n"
                               f"{self.err_path.read_text(errors='replace')[-3000:]}")
        return json.loads(line)

    def close(self, keep: bool) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(60)
        self.err.close()
        res = json.loads(self.result_file.read_text()) if self.result_file.exists() else {}
        if not keep:
            shutil.rmtree(self.state, ignore_errors=True)
        return res


def _pct(values, q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _summarise(rounds, seed: int) -> dict:
    """rounds: [{side: {"times": [...], "cpu": s}}]; medians and p90 (ms) per side, ratios ours/bare."""
    out = {}
    for side in SIDES:
        pooled = [t for r in rounds for t in r[side]["times"]]
        out[side] = {"median_ms": 1e3 * statistics.median(pooled), "p90_ms": 1e3 * _pct(pooled, 0.9),
                     "min_ms": 1e3 * min(pooled), "requests": len(pooled),
                     "cpu_ms_per_request": 1e3 * sum(r[side]["cpu"] for r in rounds) / len(pooled)}
    per_round = [statistics.median(r["ours"]["times"]) / statistics.median(r["bare"]["times"]) for r in rounds]
    cpu_round = [(r["ours"]["cpu"] / len(r["ours"]["times"])) / (r["bare"]["cpu"] / len(r["bare"]["times"]))
                 for r in rounds]
    rng = random.Random(seed)
    boot = []
    for _ in range(5000):  # resample rounds: interval of the median of per-round ratios
        boot.append(statistics.median([per_round[rng.randrange(len(per_round))] for _ in per_round]))
    out["ratio_median_of_rounds"] = statistics.median(per_round)
    out["ratio_rounds_min"], out["ratio_rounds_max"] = min(per_round), max(per_round)
    out["ratio_pooled_medians"] = out["ours"]["median_ms"] / out["bare"]["median_ms"]
    out["ratio_bootstrap_90"] = [_pct(boot, 0.05), _pct(boot, 0.95)]
    out["ratio_min_of_mins"] = out["ours"]["min_ms"] / out["bare"]["min_ms"]
    out["cpu_ratio_median_of_rounds"] = statistics.median(cpu_round)
    out["ratio_p90_pooled"] = out["ours"]["p90_ms"] / out["bare"]["p90_ms"]
    out["per_round_ratios"] = per_round
    out["per_round_median_ms"] = {side: [round(1e3 * statistics.median(r[side]["times"]), 3) for r in rounds]
                                  for side in SIDES}
    return out


def _http_batch(session, port: int, kind: str, n: int, ask_cpu) -> dict:
    url = f"http://127.0.0.1:{port}/wps"
    c0 = ask_cpu()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = session.get(url, params=QUERIES[kind], timeout=60)
        body = r.content
        times.append(time.perf_counter() - t0)
        if r.status_code != 200 or EXPECT[kind] not in body:
            raise RuntimeError(f"HTTP {kind}: {r.status_code} {body[:2000]!r}")
    return {"times": times, "cpu": ask_cpu() - c0}


def run_overhead(args) -> dict:
    sides = {name: Side(name, args.workdir) for name in SIDES}
    res = {"rounds": args.rounds, "batch": args.batch, "warmup": args.warmup}
    try:
        transports = ["inproc"] + ([] if args.skip_http else ["http"])
        sessions, ports = {}, {}
        if "http" in transports:
            import requests

            for name, side in sides.items():
                ports[name] = side.ask(op="http")["port"]
                sessions[name] = requests.Session()
        for transport in transports:
            res[transport] = {}
            for kind in KINDS:
                def batch(name, n):
                    side = sides[name]
                    if transport == "inproc":
                        return side.ask(op="inproc", kind=kind, n=n)
                    return _http_batch(sessions[name], ports[name], kind, n, lambda: side.ask(op="cpu")["cpu"])

                for name in SIDES:
                    batch(name, args.warmup)
                rounds = []
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                for i in range(args.rounds):
                    order = SIDES if i % 2 == 0 else SIDES[::-1]
                    rounds.append({name: batch(name, args.batch) for name in order})
                s = _summarise(rounds, args.seed)
                s["seconds"] = time.perf_counter() - t0
                s["load_average_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                res[transport][kind] = s
                print(f"  [{transport} {kind}] bare {s['bare']['median_ms']:.2f} ms, ours {s['ours']['median_ms']:.2f} ms"
                      f" -> ratio {s['ratio_median_of_rounds']:.3f} (rounds {s['ratio_rounds_min']:.3f}"
                      f"-{s['ratio_rounds_max']:.3f}), load {s['load_average_1min'][0]:.1f}"
                      f" -> {s['load_average_1min'][1]:.1f}", flush=True)
        for sess in sessions.values():
            sess.close()
    finally:
        for name, side in sides.items():
            res[f"{name}_child"] = side.close(args.keep_data)
    return res


def run(args) -> dict:
    if args.quick:
        args.rounds, args.batch, args.warmup = 4, 10, 10
        args.jobs, args.single = 6, 1
        args.parallel = "2"
    print(f"== WPS overhead: {args.rounds} rounds x {args.batch} requests per side, type and transport")
    res = {"versions": _versions()}
    res["overhead"] = run_overhead(args)
    if not args.skip_drain:
        res["drain"] = {}
        for p in C.parse_int_list(args.parallel):
            print(f"== WPS drain: {args.jobs} validate_classification jobs, --parallel {p}")
            state = args.workdir / f"wps-drain-p{p}-{os.getpid()}"
            r = C.run_case(SCRIPT, "drain", ["--parallel", str(p), "--state", str(state), "--jobs", str(args.jobs),
                                             "--single", str(args.single), "--poll", str(args.poll),
                                             "--data", str(args.data), "--workdir", str(args.workdir)]
                           + (["--keep-data"] if args.keep_data else []), args.workdir, label=f"drain-p{p}")
            res["drain"][str(p)] = r["result"]
    return res


def _versions() -> dict:
    code = ("import json, sys, importlib.metadata as m; print(json.dumps({'python': sys.version.split()[0], "
            "**{k: m.version(k) for k in ('pywps', 'werkzeug', 'SQLAlchemy', 'gunicorn', 'requests', 'geoml-hub')}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": out.stderr[-500:]}


def print_results(res: dict) -> None:
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    ov = res["overhead"]
    rows = []
    for transport in ("inproc", "http"):
        for kind in KINDS:
            s = ov.get(transport, {}).get(kind)
            if not s:
                continue
            rows.append([transport, kind, s["bare"]["median_ms"], s["ours"]["median_ms"], s["bare"]["p90_ms"],
                         s["ours"]["p90_ms"], round(s["ratio_median_of_rounds"], 3), round(s["ratio_pooled_medians"], 3),
                         f"{s['ratio_rounds_min']:.3f}-{s['ratio_rounds_max']:.3f}",
                         f"{s['ratio_bootstrap_90'][0]:.3f}-{s['ratio_bootstrap_90'][1]:.3f}",
                         round(s["cpu_ratio_median_of_rounds"], 3),
                         "yes" if s["ratio_median_of_rounds"] <= TARGET else "NO"])
    print(C.table(rows, ["transport", "request", "bare med ms", "ours med ms", "bare p90", "ours p90",
                         "ratio", "pooled", "rounds range", "bootstrap 90%", "CPU ratio", f"<= {TARGET}"]))
    print(f"  response bytes: bare {ov.get('bare_child', {}).get('response_bytes')}, "
          f"ours {ov.get('ours_child', {}).get('response_bytes')}")
    if "drain" in res:
        rows = []
        for p, d in res["drain"].items():
            rows.append([p, d["jobs"], d["single_median_seconds"], d["ideal_seconds"], d["drain_seconds"],
                         round(d["ratio_to_ideal"], 3), d["submit_seconds"],
                         statistics.median(d["job_run_seconds"]), sum(d["job_run_seconds"]) / int(p),
                         d["turnover_gap_mean_seconds"], f"{d['load_average_1min'][0]:.1f}"
                         f"->{d['load_average_1min'][1]:.1f}"])
        print(C.table(rows, ["parallel", "jobs", "single job s", "ideal s", "drain s", "drain/ideal",
                             "submit s", "run s (median)", "sum run / P s", "slot gap s", "load"]))


def main(argv=None) -> dict:
    return C.bench_main(argv, __doc__, "wps", add_args, ["--side", "--state"], CASES, run, print_results)


if __name__ == "__main__":
    main()
