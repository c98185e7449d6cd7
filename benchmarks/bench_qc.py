#!/usr/bin/env python
"""Benchmark 1 — pixel QC: geoml-hub's windowed validation vs PyCM from pixel vectors.

Two single-band uint8 GeoTIFFs of ``--pixels`` pixels (square, tiled 256x256, DEFLATE)
are generated window by window: a reference with ``--classes`` classes (codes 1..K) in
8x8-pixel blocks, ``--unlabelled`` of the blocks 0 (= unlabelled), and a classification
that agrees with the reference on ``--agreement`` of the pixels (elsewhere a random
class). Each side runs in its own fresh process:

* ``ours``: ``geoml_hub.validation.validate_classification(cls, ref, reference_nodata=0)``
  (windowed ``confusion_counts`` + ``build_confusion_matrix`` + ``qc_summary``);
* ``pycm``: read both rasters whole with rasterio, ``mask = ref != 0``, then
  ``pycm.ConfusionMatrix(actual_vector=ref[mask], predict_vector=pred[mask])``.

The statistics (n, overall accuracy, kappa, per-class PPV, TPR, F1) must agree to 1e-12;
the time ratio (pycm / ours, target >= 20) and the peak-RSS ratio (ours / pycm, target
<= 1/3) are reported. Timings exclude interpreter start and imports on both sides.

    python benchmarks/bench_qc.py --pixels 1e6          # quick check
    python benchmarks/bench_qc.py                       # 10^8 pixels (~200 MB of data)
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCRIPT = Path(__file__).resolve()
ROWS = 1024  # generation window (rows)
BLOCK = 8  # reference class blocks (pixels)
TOLERANCE = 1e-12


def add_args(p):
    p.add_argument("--pixels", type=float, default=1e8, help="pixels per raster (square side = isqrt); default 1e8")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--unlabelled", type=float, default=0.3, help="fraction of unlabelled (0) reference pixels")
    p.add_argument("--agreement", type=float, default=0.8, help="fraction of pixels where classification = reference")
    p.add_argument("--compress", default="deflate", help="GeoTIFF compression of the generated rasters (or 'none')")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side (median time, max memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-pycm", action="store_true", help="measure only geoml-hub's side")
    return p


def data_dir(args) -> Path:
    side = math.isqrt(int(args.pixels))
    return args.workdir / "data" / (f"qc-{side}-k{args.classes}-u{args.unlabelled}-a{args.agreement}"
                                    f"-{args.compress}-s{args.seed}")


# ---------------------------------------------------------------------------
# child cases


def case_generate(args) -> dict:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    side = math.isqrt(int(args.pixels))
    out = Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    k = args.classes
    weights = 1.0 / np.arange(1, k + 1) ** 0.7  # mildly unbalanced classes
    weights /= weights.sum()
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "width": side, "height": side,
               "crs": "EPSG:32633", "transform": from_origin(500000, 6000000, 10, 10), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}
    if side < 256:
        profile.update(tiled=False)
        del profile["blockxsize"], profile["blockysize"]
    if args.compress.lower() != "none":
        profile["compress"] = args.compress
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=64), \
            rasterio.open(out / ".reference.tif", "w", nodata=0, **profile) as ref_dst, \
            rasterio.open(out / ".classification.tif", "w", nodata=255, **profile) as cls_dst:
        for r in range(0, side, ROWS):
            h = min(ROWS, side - r)
            rng = np.random.default_rng([args.seed, r])
            nb_r, nb_c = -(-h // BLOCK), -(-side // BLOCK)
            blocks = rng.choice(np.arange(1, k + 1, dtype=np.uint8), size=(nb_r, nb_c), p=weights)
            blocks[rng.random((nb_r, nb_c)) < args.unlabelled] = 0
            ref = np.repeat(np.repeat(blocks, BLOCK, axis=0), BLOCK, axis=1)[:h, :side]
            other = rng.integers(1, k + 1, size=(h, side), dtype=np.uint8)
            agree = rng.random((h, side), dtype=np.float32) < args.agreement
            pred = np.where(agree & (ref != 0), ref, other)
            win = Window(0, r, side, h)
            ref_dst.write(ref, 1, window=win)
            cls_dst.write(pred, 1, window=win)
    (out / ".reference.tif").rename(out / "reference.tif")
    (out / ".classification.tif").rename(out / "classification.tif")
    return {"side": side, "pixels": side * side, "seconds": time.perf_counter() - t0,
            "bytes": sum(f.stat().st_size for f in out.glob("*.tif"))}


def _stats_pycm(cm, classes) -> dict:
    def clean(v):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(v) or math.isinf(v) else v

    return {"n": int(sum(sum(row.values()) for row in cm.table.values())),
            "overall_accuracy": clean(cm.Overall_ACC), "kappa": clean(cm.Kappa),
            "ppv": {str(int(c)): clean(cm.PPV[c]) for c in classes},
            "tpr": {str(int(c)): clean(cm.TPR[c]) for c in classes},
            "f1": {str(int(c)): clean(cm.F1[c]) for c in classes}}


def case_baseline(args) -> dict:
    import numpy  # noqa: F401
    import pycm  # noqa: F401
    import rasterio  # noqa: F401

    import geoml_hub.validation  # noqa: F401
    return {"rss_after_imports_mib": C.PeakSampler.current_mib()}


def case_ours(args) -> dict:
    import numpy  # noqa: F401
    import pycm  # noqa: F401
    import rasterio  # noqa: F401

    from geoml_hub.validation import validate_classification

    d = Path(args.data)
    rss0 = C.PeakSampler.current_mib()
    with C.PeakSampler() as sampler:
        t0 = time.perf_counter()
        s = validate_classification(d / "classification.tif", d / "reference.tif", reference_nodata=0)
        seconds = time.perf_counter() - t0
    stats = {"n": s["n"], "overall_accuracy": s["overall_accuracy"], "kappa": s["kappa"],
             "ppv": {str(s["codes"][n]): s["ppv"][n] for n in s["classes"]},
             "tpr": {str(s["codes"][n]): s["tpr"][n] for n in s["classes"]},
             "f1": {str(s["codes"][n]): s["f1"][n] for n in s["classes"]}}
    return {"seconds": seconds, "stats": stats, "labelled": s["labelled"], "unclassified": s["unclassified"],
            "rss_before_mib": rss0, **sampler.report()}


def case_pycm(args) -> dict:
    import numpy as np  # noqa: F401
    import rasterio
    from pycm import ConfusionMatrix

    import geoml_hub.validation  # noqa: F401  (same imports as the other side)

    d = Path(args.data)
    rss0 = C.PeakSampler.current_mib()
    with C.PeakSampler() as sampler:
        t0 = time.perf_counter()
        with rasterio.open(d / "reference.tif") as src:
            ref = src.read(1)
        with rasterio.open(d / "classification.tif") as src:
            pred = src.read(1)
        t_read = time.perf_counter()
        mask = ref != 0
        actual, predicted = ref[mask], pred[mask]
        t_mask = time.perf_counter()
        cm = ConfusionMatrix(actual_vector=actual, predict_vector=predicted)
        t_cm = time.perf_counter()
        stats = _stats_pycm(cm, cm.classes)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "read_seconds": t_read - t0, "mask_seconds": t_mask - t_read,
            "confusion_matrix_seconds": t_cm - t_mask, "stats": stats, "labelled": int(actual.size),
            "rss_before_mib": rss0, **sampler.report()}


CASES = {"generate": case_generate, "baseline": case_baseline, "ours": case_ours, "pycm": case_pycm}


# ---------------------------------------------------------------------------
# parent


def compare_stats(a: dict, b: dict) -> dict:
    """Largest absolute difference of every statistic; ``equal`` if all <= TOLERANCE and n, classes equal."""
    diffs = {}
    for key in ("overall_accuracy", "kappa"):
        diffs[key] = abs(a[key] - b[key])
    for key in ("ppv", "tpr", "f1"):
        if set(a[key]) != set(b[key]):
            return {"equal": False, "reason": f"class sets differ: {sorted(a[key])} vs {sorted(b[key])}"}
        vals = [(a[key][c], b[key][c]) for c in a[key]]
        if any((x is None) != (y is None) for x, y in vals):
            return {"equal": False, "reason": f"{key}: undefined on one side only"}
        diffs[key] = max([abs(x - y) for x, y in vals if x is not None] or [0.0])
    ok = a["n"] == b["n"] and all(v <= TOLERANCE for v in diffs.values())
    return {"equal": ok, "n": [a["n"], b["n"]], "max_abs_diff": diffs}


def run(args) -> dict:
    side = math.isqrt(int(args.pixels))
    print(f"== QC: {side}x{side} = {side * side:,} pixels, {args.classes} classes")
    data = data_dir(args)
    child = ["--data", str(data), "--pixels", str(int(args.pixels)), "--classes", str(args.classes),
             "--unlabelled", str(args.unlabelled), "--agreement", str(args.agreement),
             "--compress", args.compress, "--seed", str(args.seed), "--workdir", str(args.workdir)]
    gen = None
    if not (data / "classification.tif").exists():
        C.require_disk(args.workdir, 2 * side * side / 1024 ** 3, "two uint8 rasters (uncompressed size, upper bound)")
        gen = C.run_case(SCRIPT, "generate", child, args.workdir)
    else:
        print(f"  reusing {data}")
    results = {"pixels": side * side, "side": side, "classes": args.classes, "unlabelled": args.unlabelled,
               "agreement": args.agreement, "compress": args.compress, "data": str(data),
               "generation": gen and gen["result"]}
    results["baseline"] = C.run_case(SCRIPT, "baseline", child, args.workdir)
    runs = {"ours": [], "pycm": []}
    for _ in range(args.repeats):
        for side_name in ("ours",) + (() if args.skip_pycm else ("pycm",)):
            runs[side_name].append(C.run_case(SCRIPT, side_name, child, args.workdir))
    summary = {}
    for name, rs in runs.items():
        if not rs:
            continue
        secs = sorted(r["result"]["seconds"] for r in rs)
        summary[name] = {"seconds": secs[len(secs) // 2], "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                         "pixels_per_second": side * side / secs[len(secs) // 2], "runs": rs}
    results.update(summary)
    if "pycm" in summary:
        ours, ref = summary["ours"], summary["pycm"]
        results["statistics"] = compare_stats(ours["runs"][0]["result"]["stats"], ref["runs"][0]["result"]["stats"])
        results["time_ratio_pycm_over_ours"] = ref["seconds"] / ours["seconds"]
        results["memory_ratio_ours_over_pycm"] = ours["peak_rss_mib"] / ref["peak_rss_mib"]
        results["targets"] = {"time_ratio": ">= 20", "memory_ratio": "<= 0.333",
                              "time_ok": results["time_ratio_pycm_over_ours"] >= 20,
                              "memory_ok": results["memory_ratio_ours_over_pycm"] <= 1 / 3}
    if not args.keep_data:
        shutil.rmtree(data, ignore_errors=True)
    return results


def print_results(res: dict) -> None:
    rows = []
    for name in ("ours", "pycm"):
        if name in res:
            r = res[name]
            rows.append([name, r["seconds"], r["pixels_per_second"] / 1e6, r["peak_rss_mib"]])
    print(C.table(rows, ["side", "seconds", "Mpixel/s", "peak RSS MiB"]))
    print(f"  process RSS after imports only: {res['baseline']['peak_rss_mib']:.0f} MiB")
    if "statistics" in res:
        st = res["statistics"]
        print(f"  statistics identical (<= {TOLERANCE}): {st['equal']}  "
              f"{st.get('max_abs_diff', st.get('reason'))}")
        print(f"  time ratio pycm/ours = {res['time_ratio_pycm_over_ours']:.1f} (target >= 20); "
              f"memory ratio ours/pycm = {res['memory_ratio_ours_over_pycm']:.3f} (target <= 0.333)")
        s = res["ours"]["runs"][0]["result"]["stats"]
        print(f"  overall accuracy {s['overall_accuracy']:.6f}, kappa {s['kappa']:.6f}, n {s['n']:,}")


def main(argv=None) -> dict:
    res = C.bench_main(argv, __doc__, "qc", add_args, ['--data'], CASES, run, print_results)
    if "statistics" in res and not res["statistics"]["equal"]:
        raise SystemExit("QC statistics differ between geoml-hub and PyCM")
    return res


if __name__ == "__main__":
    main()
