#!/usr/bin/env python
"""Benchmark 6 — web map tiles: rendering time per tile, and a browser's load of a full view.

**Rendering** (in-process, ``geoml_hub.map.tiles.render_tile``): every Web Mercator tile that
covers the Chiapas scene (250 x 250 pixels, 30 m, EPSG:32615) at zooms 12, 14 and 16, as a
true-colour composite (bands 3, 2, 1, 2–98 % stretch) and the reference labels (colour
table); the first tile of a raster is timed apart (it computes the stretch statistics over the
whole raster), the others give the median and 90th percentile.

**A view over HTTP**: a real ``geoml-hub map serve`` (gunicorn, 2 workers x 8 threads) on
loopback; the tiles of the scene at zoom 14 (what the map shows when it zooms to the scene)
are fetched with 6 parallel connections, as a browser does (its per-host limit), after one
warm-up view. Reported: the wall time of the whole view and the median tile latency.

Usage: ``python benchmarks/bench_tiles.py [--rounds 5]`` (data: ``../shared/data``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
SCENE = DATA / "landsat7_chiapas" / "LE70220491999322EDC01_stack.gtif"
LABELS = DATA / "landsat7_chiapas" / "training_data.gtif"


def tiles_of(path: Path, zoom: int):
    import morecantile
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    tms = morecantile.tms.get("WebMercatorQuad")
    return [(t.z, t.x, t.y) for t in tms.tiles(west, south, east, north, [zoom])]


def bench_render(rounds: int):
    from geoml_hub.map import tiles as T

    out = {}
    for name, path, kind in (("scene 3,2,1", SCENE, "scene"), ("labels", LABELS, "labels")):
        T._stretch.cache_clear()
        T._classes_cached.cache_clear()
        first = None
        for zoom in (12, 14, 16):
            coords = tiles_of(path, zoom)
            times = []
            for _ in range(rounds):
                for z, x, y in coords:
                    t0 = time.perf_counter()
                    T.render_tile(path, z, x, y, kind, (3, 2, 1))
                    dt = time.perf_counter() - t0
                    if first is None:
                        first = dt
                        continue
                    times.append(dt)
            times.sort()
            out[f"{name} z{zoom}"] = {"tiles": len(coords), "median_ms": 1000 * statistics.median(times),
                                      "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))]}
        out[f"{name} first tile (with statistics)"] = {"ms": 1000 * first}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(rounds: int):
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tiles-"))
    ready = tmp / "ready"
    exe = Path(sys.executable).parent / "geoml-hub"
    proc = subprocess.Popen([str(exe), "map", "serve", "--port", str(port), "--data-root", f"data={DATA}",
                             "--cache-dir", str(tmp / "cache"), "--ready-file", str(ready)],
                            stdout=open(tmp / "map.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError((tmp / "map.log").read_text())
            time.sleep(0.1)
        ds = "data/landsat7_chiapas/LE70220491999322EDC01_stack.gtif"
        urls = [f"http://127.0.0.1:{port}/api/tiles/{z}/{x}/{y}.png?dataset={ds}&bands=3,2,1&stretch=2,98"
                for z, x, y in tiles_of(SCENE, 14)]

        def fetch(url):
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as r:
                assert r.status == 200 and r.read(8).startswith(b"\x89PNG")
            return time.perf_counter() - t0

        views, lat = [], []
        with cf.ThreadPoolExecutor(6) as pool:
            list(pool.map(fetch, urls))   # warm-up view
            for _ in range(rounds):
                t0 = time.perf_counter()
                lat += list(pool.map(fetch, urls))
                views.append(time.perf_counter() - t0)
        return {"tiles per view": len(urls), "view median_ms": 1000 * statistics.median(views),
                "view max_ms": 1000 * max(views), "tile median_ms": 1000 * statistics.median(lat)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load": os.getloadavg()},
              "render": bench_render(args.rounds), "http": bench_http(args.rounds)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
