#!/usr/bin/env python
"""Benchmark 7 — concurrent GetCapabilities / DescribeProcess against a real WPS server.

A real ``geoml-hub wps serve --server gunicorn`` (2 HTTP workers of 8 threads, the default)
on 127.0.0.1 with a fresh state directory, once with the default SQLite job and logging
database and once with a throw-away PostgreSQL (``tests/pg.py``: Debian's ``postgresql``
package, trust authentication on loopback). ``--concurrency`` client threads, each with its
own ``requests.Session``, send a bounded loop of requests (``--requests`` in all), alternating
GetCapabilities and DescribeProcess (``identifier=train_model``). Every answer is checked: an
error is anything but HTTP 200 with ``Capabilities`` / ``ProcessDescriptions`` in the body (a
connection error or a timeout included). Reported per database: latency p50 / p95 / max (ms),
the error count and the first error texts, wall time, requests per second, and the 1-minute
load average before and after. Every request goes to 127.0.0.1 only.

    python benchmarks/bench_wps_load.py --requests 400 --concurrency 16     # quick check
    python benchmarks/bench_wps_load.py                                     # 4000 requests, 32 threads
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
QUERIES = [({"service": "WPS", "request": "GetCapabilities"}, b"Capabilities"),
           ({"service": "WPS", "request": "DescribeProcess", "version": "1.0.0", "identifier": "train_model"},
            b"ProcessDescriptions")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state: Path, database, log: Path):
    """``geoml-hub wps serve`` on a free loopback port; returns (process, base URL)."""
    import requests

    port = _free_port()
    ready = state.parent / f"{state.name}.ready"
    ready.unlink(missing_ok=True)
    cmd = [str(Path(sys.executable).parent / "geoml-hub"), "wps", "serve", "--server", "gunicorn", "--port", str(port),
           "--state-dir", str(state), "--data-root", f"data={DATA}", "--ready-file", str(ready)]
    if database:
        cmd += ["--database", database]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}; see {log}")
        if ready.exists():
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    return proc, url
            except requests.RequestException:
                pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"server did not start; see {log}")


def stop_server(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def load(url: str, n: int, concurrency: int, timeout: float) -> dict:
    """Send ``n`` requests from ``concurrency`` threads; latencies (ms) and errors."""
    import requests

    latencies, errors = [], []
    lock = threading.Lock()
    per_thread = [n // concurrency + (1 if k < n % concurrency else 0) for k in range(concurrency)]

    def worker(k: int) -> None:
        session = requests.Session()
        mine, bad = [], []
        for i in range(per_thread[k]):
            params, expect = QUERIES[(k + i) % len(QUERIES)]
            t0 = time.perf_counter()
            try:
                r = session.get(url + "/wps", params=params, timeout=timeout)
                ok = r.status_code == 200 and expect in r.content
                what = None if ok else f"HTTP {r.status_code}: {r.text[-400:]}"
            except requests.RequestException as exc:
                what = f"{type(exc).__name__}: {exc}"
            mine.append((time.perf_counter() - t0) * 1000.0)
            if what:
                bad.append(what)
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": len(lat), "concurrency": concurrency, "errors": len(errors), "error_texts": errors[:3],
            "p50_ms": round(statistics.median(lat), 1), "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 1),
            "max_ms": round(lat[-1], 1), "wall_seconds": round(wall, 1),
            "requests_per_second": round(len(lat) / wall, 1)}


def run_one(name: str, args, workdir: Path) -> dict:
    pg = None
    database = None
    if name == "postgresql":
        sys.path.insert(0, str(REPO / "tests"))
        from pg import Postgres

        pg = Postgres().start()
        database = pg.url
    state = workdir / f"wps-load-{name}-{os.getpid()}"
    log = workdir / f"wps-load-{name}-{os.getpid()}.log"
    proc, url = start_server(state, database, log)
    try:
        load(url, 40, 4, args.timeout)  # warm-up: every gunicorn thread has imported and rendered once
        before = os.getloadavg()[0]
        res = load(url, args.requests, args.concurrency, args.timeout)
        res["load_average_1min"] = [round(before, 2), round(os.getloadavg()[0], 2)]
        text = log.read_text(errors="replace")
        res["server_log_database_errors"] = text.count("database error")
        res["server_log_locked"] = text.count("database is locked")
        return res
    finally:
        stop_server(proc)
        if pg is not None:
            pg.stop()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=4000, help="requests per database (default 4000)")
    p.add_argument("--concurrency", type=int, default=32, help="client threads (default 32)")
    p.add_argument("--databases", default="sqlite,postgresql", help="sqlite, postgresql or both (default)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a client waits for one answer")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/geoml-bench"), help="state directories and logs")
    p.add_argument("--out", type=Path, help="JSON results (default WORKDIR/wps_load.json)")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    res = {"machine": C.machine_info(), "results": {}}
    for name in [d.strip() for d in args.databases.split(",") if d.strip()]:
        print(f"== {name}: {args.requests} requests from {args.concurrency} threads", flush=True)
        res["results"][name] = r = run_one(name, args, args.workdir)
        print(f"   p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, max {r['max_ms']} ms, errors {r['errors']}, "
              f"{r['requests_per_second']} req/s, load {r['load_average_1min']}", flush=True)
        for e in r["error_texts"]:
            print("   error:", e.replace("\n", " ")[:300])
    out = args.out or args.workdir / "wps_load.json"
    C.write_json(out, res)
    print(f"results: {out}")
    return res


if __name__ == "__main__":
    main()
