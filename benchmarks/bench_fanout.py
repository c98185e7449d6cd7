#!/usr/bin/env python
"""Benchmark 9 — fan-out over row-blocks: ``classify_scene(workers=K)`` and
``validate_classification(workers=K)`` against one process (issue 14, item 4).

The real Chiapas scene (``../shared/data/landsat7_chiapas``, 250x250, 8 bands) is mosaicked
``--repeat`` x ``--repeat`` times into a bigger scene (default 8x8: 2000x2000, 4 Mpx, tiled
256x256) and its labels likewise. Two models are trained quickly on the real Chiapas samples
(the weights matter little for speed): a pixel model (dense path) and a 5x5 patch model
(per-patch path, ``--patch-stride``, default 4). Each case runs ``--runs`` times; the best run is reported with the
median, and the classes of every ``workers`` > 1 output are checked equal to ``workers=1``.
The load average (1 min) before and after each case is recorded: on a shared machine it says
how much the ratio can be trusted.

    python benchmarks/bench_fanout.py                     # 2000^2, workers 1 and 2
    python benchmarks/bench_fanout.py --repeat 4 --runs 1 # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "landsat7_chiapas"
SCENE = DATA / "LE70220491999322EDC01_stack.gtif"
LABELS = DATA / "training_data.gtif"
NAMES = {1: "forest", 2: "water", 3: "herbaceous", 4: "barren", 5: "urban"}


def mosaic(src_path: Path, out: Path, n: int) -> Path:
    with rasterio.open(src_path) as src:
        data, profile = src.read(), src.profile
    profile.update(height=data.shape[1] * n, width=data.shape[2] * n, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.tile(data, (1, n, n)))
    return out


def timed(fn, runs):
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=8, help="mosaic the 250x250 scene this many times per side")
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated (1 first: the reference)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--models", default="pixel,patch")
    p.add_argument("--patch-stride", type=int, default=4, help="stride of the 5x5 patch model")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    from geoml_hub.classification import classify_scene
    from geoml_hub.extraction import extract_samples
    from geoml_hub.training import train_model
    from geoml_hub.validation import validate_classification

    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoml-bench-fanout-") as tmp:
        tmp = Path(tmp)
        scene = mosaic(SCENE, tmp / "scene.tif", args.repeat)
        labels = mosaic(LABELS, tmp / "labels.tif", args.repeat)
        with rasterio.open(scene) as src:
            mpx = src.width * src.height / 1e6
        models = {}
        if "pixel" in args.models:
            s = extract_samples(SCENE, LABELS, tmp / "s1", patch_size=1, class_names=NAMES)
            models["pixel"] = (train_model(s.root, tmp / "pixel.pt", epochs=2, widths=(16,), seed=0,
                                           device="cpu").model_path, None)
        if "patch" in args.models:
            s = extract_samples(SCENE, LABELS, tmp / "s5", patch_size=5, class_names=NAMES)
            models["patch"] = (train_model(s.root, tmp / "patch.pt", epochs=1, widths=(8,), seed=0,
                                           device="cpu").model_path, args.patch_stride)
        for name, (model, stride) in models.items():
            ref = None
            for k in workers:
                load0 = os.getloadavg()[0]
                out = tmp / f"{name}-{k}.tif"
                res, times = timed(lambda: classify_scene(model, scene, out, stride=stride, tile_size=args.tile_size,
                                                          device="cpu", workers=k), args.runs)
                load1 = os.getloadavg()[0]
                with rasterio.open(out) as src:
                    cls = src.read(1)
                if ref is None:
                    ref = cls
                rows.append({"case": f"classify {name}", "workers": k, "mpx": mpx, "best_s": min(times),
                             "median_s": statistics.median(times), "mpx_per_s": mpx / min(times),
                             "identical": bool(np.array_equal(cls, ref)), "load_before": load0, "load_after": load1})
                print(json.dumps(rows[-1]), flush=True)
            qc_ref = None
            for k in workers:
                load0 = os.getloadavg()[0]
                summary, times = timed(lambda: validate_classification(tmp / f"{name}-1.tif", labels, workers=k),
                                       args.runs)
                load1 = os.getloadavg()[0]
                if qc_ref is None:
                    qc_ref = summary
                same = (summary["overall_accuracy"], summary["kappa"], summary["n"]) == (
                    qc_ref["overall_accuracy"], qc_ref["kappa"], qc_ref["n"])
                rows.append({"case": f"QC of {name}", "workers": k, "mpx": mpx, "best_s": min(times),
                             "median_s": statistics.median(times), "mpx_per_s": mpx / min(times),
                             "identical": same, "load_before": load0, "load_after": load1})
                print(json.dumps(rows[-1]), flush=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "processor": platform.processor()}
    print("\n| case | workers | Mpx | best s | median s | Mpx/s | × vs 1 | identical | load 1-min before → after |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {}
    for r in rows:
        if r["workers"] == workers[0]:
            base[r["case"]] = r["best_s"]
        ratio = base[r["case"]] / r["best_s"]
        print(f"| {r['case']} | {r['workers']} | {r['mpx']:.2f} | {r['best_s']:.2f} | {r['median_s']:.2f} | "
              f"{r['mpx_per_s']:.2f} | {ratio:.2f} | {'yes' if r['identical'] else 'NO'} | "
              f"{r['load_before']:.1f} → {r['load_after']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
