#!/usr/bin/env python
"""Benchmark 5 — issue 14 items 1-3: dense inference, balancing features and QC against their baselines.

Every figure is a ratio against its baseline measured in the same run, each side in a
fresh child process (peak RSS of record: ``ru_maxrss``), ``--repeats`` timed runs inside
the child (median), 1-minute load average before and after.

* ``pixel``: ``classify_scene`` of a pixel model (13 bands, widths 32/64/128, untrained:
  random weights and BatchNorm statistics) on a synthetic 13-band uint16 scene of
  ``--pixel-size``², ``method='patch'`` (today's path) vs ``method='dense'``; the two
  classification rasters must be identical.
* ``patch``: ``classify_scene`` of the default patch model (64×64, widths 32/64/128, band
  statistics; untrained) on a ``--patch-size``² scene at strides 32, 16 and 8, both
  methods; the agreement of the two rasters is reported (untrained nets disagree more
  than trained ones: real-data agreement is ``accuracy_dense.py``'s).
* ``scene``: the dense paths end to end on ``--scene-sizes`` (pixel model, and patch model
  at stride 32; ``--scene-models``), Mpx/s and peak RSS for two sizes (flat memory); the
  time for one 10,980² Sentinel-2 tile is extrapolated from each size's Mpx/s
  (``--scene-sizes 4096,10980`` measures a whole tile: it generates a 3.1 GB scene).
* ``features``: ``balancing.compute_features`` (integer sums) vs today's implementation
  (two-pass float64 ``mean``/``std`` on 256-sample chunks, copied here as the baseline) vs
  the floor (reading the samples alone) on ``--feature-samples`` synthetic 13×64×64 uint16
  samples in ``.npy`` files; features must agree to 1e-9 relative.
* ``qc``: ``validation.confusion_counts`` vs its floor (reading both rasters window by
  window + one ``numpy.bincount`` of ``ref << 8 | pred`` per window) on two
  ``--qc-side``² uint8 rasters (tiled, DEFLATE); PyCM matrix + summary and report writing
  timed separately.

    python benchmarks/bench_dense.py --quick            # small sizes, a check
    python benchmarks/bench_dense.py                    # the figures of docs/benchmarks.md
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCRIPT = Path(__file__).resolve()
S2_TILE = 10980


def add_args(p):
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pixel-size", type=int, default=3000, help="side of the pixel-model scene (default 3000: 9 Mpx)")
    p.add_argument("--patch-size", type=int, default=768, help="side of the patch-model scene")
    p.add_argument("--strides", default="32,16,8")
    p.add_argument("--scene-sizes", default="2048,4096", help="dense end to end, two sizes for memory flatness")
    p.add_argument("--scene-models", default="pixel,patch", help="models of the end-to-end case (patch: stride 32)")
    p.add_argument("--feature-samples", type=int, default=3000)
    p.add_argument("--qc-side", type=int, default=6000)
    p.add_argument("--only", default="pixel,patch,scene,features,qc")
    p.add_argument("--quick", action="store_true", help="small sizes: a check, not figures")
    return p


# ---------------------------------------------------------------------------
# child cases


def _model(kind: str, path: Path):
    import torch

    from geoml_hub.models import save_model
    from geoml_hub.networks import PatchCNN

    torch.manual_seed(0)
    size = 1 if kind == "pixel" else 64
    net = PatchCNN(13, 10, size, [32, 64, 128], 0.2, size > 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    mean, std = [1500.0 + 50 * b for b in range(13)], [400.0] * 13
    net.norm.mean.copy_(torch.tensor(mean).reshape(1, 13, 1, 1))
    net.norm.std.copy_(torch.tensor(std).reshape(1, 13, 1, 1))
    arch = {"name": "patch_cnn", "in_bands": 13, "n_classes": 10, "patch_size": [size, size],
            "widths": [32, 64, 128], "dropout": 0.2, "band_statistics": size > 1, "log_input": False}
    save_model(path, net, architecture=arch, hyperparameters={}, class_names=[f"c{k}" for k in range(10)],
               class_codes=list(range(1, 11)), bands=list(range(1, 14)), sample_bands=13, mean=mean, std=std,
               manifest_sha256="synthetic")


def case_generate(args) -> dict:
    """Scenes (13-band uint16, tiled 256, uncompressed: smooth fields + noise), models, samples, QC rasters."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    d = Path(args.data)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for kind in ("pixel", "patch"):
        _model(kind, d / f"{kind}.pt")
    sides = sorted({args.pixel_size, args.patch_size, *C.parse_int_list(args.scene_sizes)})
    for side in sides:
        prof = {"driver": "GTiff", "dtype": "uint16", "count": 13, "width": side, "height": side,
                "crs": "EPSG:32633", "transform": from_origin(500000, 6000000, 10, 10), "tiled": True,
                "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}
        with rasterio.open(d / f"scene_{side}.tif", "w", **prof) as dst:
            for r in range(0, side, 512):
                h = min(512, side - r)
                field = rng.integers(0, 10, (h // 32 + 1, side // 32 + 1))
                base = np.repeat(np.repeat(field, 32, 0), 32, 1)[:h, :side]
                for b in range(13):
                    x = 800 + 150 * base + 40 * b + rng.integers(0, 300, (h, side))
                    dst.write(x.astype(np.uint16), b + 1, window=Window(0, r, side, h))
    feat = d / "samples" / "a"
    feat.mkdir(parents=True, exist_ok=True)
    n, per_file = args.feature_samples, 1000
    for k, s in enumerate(range(0, n, per_file)):
        m = min(per_file, n - s)
        arr = np.lib.format.open_memmap(feat / f"part_{k:03d}.npy", mode="w+", dtype=np.uint16, shape=(m, 13, 64, 64))
        for q in range(0, m, 250):
            arr[q:q + 250] = rng.integers(0, 12000, (min(250, m - q), 13, 64, 64), dtype=np.uint16)
        arr.flush()
        del arr
    side = args.qc_side
    prof = {"driver": "GTiff", "dtype": "uint8", "count": 1, "width": side, "height": side, "crs": "EPSG:32633",
            "transform": from_origin(500000, 6000000, 10, 10), "tiled": True, "blockxsize": 256, "blockysize": 256,
            "compress": "deflate"}
    with rasterio.open(d / "reference.tif", "w", **dict(prof, nodata=0)) as a, \
            rasterio.open(d / "classification.tif", "w", **dict(prof, nodata=255)) as b:
        for r in range(0, side, 1024):
            h = min(1024, side - r)
            ref = np.repeat(np.repeat(rng.integers(0, 11, (h // 8 + 1, side // 8 + 1)), 8, 0), 8, 1)[:h, :side]
            cls = np.where(rng.random((h, side)) < 0.8, ref, rng.integers(1, 11, (h, side)))
            a.write(ref.astype(np.uint8), 1, window=Window(0, r, side, h))
            b.write(cls.astype(np.uint8), 1, window=Window(0, r, side, h))
    return {"seconds": time.perf_counter() - t0}


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


def case_baseline(args) -> dict:
    import numpy  # noqa: F401
    import rasterio  # noqa: F401
    import torch  # noqa: F401

    import geoml_hub.classification  # noqa: F401
    import geoml_hub.dense  # noqa: F401
    return {"rss_after_imports_mib": C.PeakSampler.current_mib()}


def case_classify(args) -> dict:
    import numpy as np
    import rasterio
    import torch  # noqa: F401

    from geoml_hub.classification import classify_scene
    from geoml_hub.models import load_model

    d = Path(args.data)
    args.side, args.stride = int(args.side), int(args.stride)
    model = load_model(d / f"{args.model}.pt", device="cpu")
    scene = d / f"scene_{args.side}.tif"
    out = Path(args.out_dir) / f"{args.model}_{args.method}_{args.side}_s{args.stride}.tif"
    out.parent.mkdir(parents=True, exist_ok=True)
    times = []
    with C.PeakSampler() as sampler:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            classify_scene(model, scene, out, stride=args.stride, method=args.method, device="cpu")
            times.append(time.perf_counter() - t0)
    res = {"seconds": times, "median_seconds": _median(times), "pixels": args.side ** 2,
           "mpx_per_s": args.side ** 2 / _median(times) / 1e6, "output": str(out), **sampler.report()}
    if args.compare:
        with rasterio.open(out) as a, rasterio.open(args.compare) as b:
            x, y = a.read(1), b.read(1)
        res["identical_to_baseline"] = bool(np.array_equal(x, y))
        res["agreement_with_baseline"] = float(np.mean(x == y))
    return res


def _features_today(sample_set):
    """compute_features before issue 14 (the baseline): float64 copies of 256 samples, two-pass mean/std."""
    import numpy as np

    from geoml_hub.samples import read_container

    n = len(sample_set)
    feats = np.empty((n, 2 * sample_set.bands), dtype=np.float64)
    for path, positions in sample_set.iter_files():
        arr = read_container(path)
        idx = np.array([sample_set.samples[p].index for p in positions])
        pos = np.asarray(positions)
        order = np.argsort(idx, kind="stable")
        idx, pos = idx[order], pos[order]
        for start in range(0, len(idx), 256):
            chunk = np.asarray(arr[idx[start:start + 256]], dtype=np.float64)
            flat = chunk.reshape(chunk.shape[0], chunk.shape[1], -1)
            feats[pos[start:start + 256], :sample_set.bands] = flat.mean(axis=2)
            feats[pos[start:start + 256], sample_set.bands:] = flat.std(axis=2)
    return feats


def _read_floor(sample_set):
    """The floor: every sample read once (1024 at a time, as the new path reads), nothing computed."""
    import numpy as np

    from geoml_hub.samples import read_container

    total = 0
    for path, positions in sample_set.iter_files():
        arr = read_container(path)
        for s in range(0, len(arr), 1024):
            total += int(np.array(arr[s:s + 1024])[:, :, 0, 0].sum())
    return total


def case_features(args) -> dict:
    import numpy as np

    from geoml_hub.balancing import compute_features
    from geoml_hub.samples import open_tree

    ss = open_tree(Path(args.data) / "samples")
    fns = {"today": _features_today, "new": compute_features, "read_floor": _read_floor}
    times = {k: [] for k in fns}
    out = {}
    for _ in range(args.repeats):  # interleaved: load changes hit every side alike
        for k, fn in fns.items():
            t0 = time.perf_counter()
            out[k] = fn(ss)
            times[k].append(time.perf_counter() - t0)
    a, b = out["today"], out["new"]
    rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))
    med = {k: _median(v) for k, v in times.items()}
    return {"samples": len(ss), "seconds": times, "median_seconds": med,
            "samples_per_s": {k: len(ss) / v for k, v in med.items()}, "max_relative_difference": rel}


def case_qc(args) -> dict:
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from geoml_hub.validation import (ROW_BLOCK, build_confusion_matrix, confusion_counts, gdal_env, qc_summary,
                                      write_reports)

    d = Path(args.data)
    ref_p, cls_p = d / "reference.tif", d / "classification.tif"

    def windows(src):
        return [Window(0, r, src.width, min(ROW_BLOCK, src.height - r)) for r in range(0, src.height, ROW_BLOCK)]

    def read_only():
        with gdal_env(), rasterio.open(ref_p) as a, rasterio.open(cls_p) as b:
            for w in windows(a):
                a.read(1, window=w), b.read(1, window=w)

    def floor():
        table = np.zeros(65536, dtype=np.int64)
        with gdal_env(), rasterio.open(ref_p) as a, rasterio.open(cls_p) as b:
            for w in windows(a):
                key = a.read(1, window=w).astype(np.uint16)
                key <<= 8
                key |= b.read(1, window=w)
                table += np.bincount(key.ravel(), minlength=65536)
        return table

    fns = {"read_only": read_only, "floor": floor, "counts": lambda: confusion_counts(cls_p, ref_p, 0)}
    times = {k: [] for k in fns}
    res = {}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            res[k] = fn()
            times[k].append(time.perf_counter() - t0)
    table = res["floor"].reshape(256, 256)
    table[0, :] = 0
    unclassified = int(table[:, 255].sum())
    table[:, 255] = 0
    pairs = {(int(i), int(j)): int(table[i, j]) for i, j in zip(*np.nonzero(table))}
    counts = res["counts"]
    t0 = time.perf_counter()
    cm, classes = build_confusion_matrix(counts.pairs)
    summary = qc_summary(cm, classes, {"labelled": counts.labelled, "unclassified": counts.unclassified})
    t1 = time.perf_counter()
    shutil.rmtree(Path(args.out_dir) / "qc", ignore_errors=True)
    write_reports(cm, classes, summary, Path(args.out_dir) / "qc", title="bench")
    t2 = time.perf_counter()
    med = {k: _median(v) for k, v in times.items()}
    with rasterio.open(ref_p) as src:
        px = src.width * src.height
    return {"pixels": px, "seconds": times, "median_seconds": med, "mpx_per_s": {k: px / v / 1e6 for k, v in med.items()},
            "counts_over_floor": med["counts"] / med["floor"], "counts_equal_floor": dict(counts.pairs) == pairs
            and counts.unclassified == unclassified, "matrix_and_summary_seconds": t1 - t0,
            "write_reports_seconds": t2 - t1}


CASES = {"generate": case_generate, "baseline": case_baseline, "classify": case_classify,
         "features": case_features, "qc": case_qc}


# ---------------------------------------------------------------------------
# parent


def run(args) -> dict:
    if args.quick:
        args.pixel_size, args.patch_size, args.scene_sizes = 600, 256, "512,768"
        args.feature_samples, args.qc_side, args.repeats = 300, 1500, 1
    only = set(args.only.split(","))
    tag = f"p{args.pixel_size}-q{args.patch_size}-s{args.scene_sizes.replace(',', '_')}-f{args.feature_samples}-c{args.qc_side}"
    data = args.workdir / "data" / f"dense-{tag}"
    outs = args.workdir / "out" / "dense"
    child = ["--workdir", str(args.workdir), "--data", str(data), "--out-dir", str(outs), "--repeats",
             str(args.repeats), "--pixel-size", str(args.pixel_size), "--patch-size", str(args.patch_size),
             "--scene-sizes", args.scene_sizes, "--feature-samples", str(args.feature_samples), "--qc-side",
             str(args.qc_side)]
    print(f"== dense inference, features, QC ({'quick' if args.quick else 'full'}; {args.repeats} repeats)")
    if not (data / "reference.tif").exists():
        shutil.rmtree(data, ignore_errors=True)
        sides = {args.pixel_size, args.patch_size, *C.parse_int_list(args.scene_sizes)}
        C.require_disk(args.workdir, sum(26 * s * s for s in sides) / 1024 ** 3 + args.feature_samples * 106496 / 1024 ** 3,
                       "scenes and samples")
        C.run_case(SCRIPT, "generate", child, args.workdir)
    res = {"repeats": args.repeats, "baseline": C.run_case(SCRIPT, "baseline", child, args.workdir)}

    def classify(model, method, side, stride=1, compare=None, repeats=None):
        extra = ["--model", model, "--method", method, "--side", str(side), "--stride", str(stride)]
        if compare:
            extra += ["--compare", compare]
        argv = child + extra
        if repeats:
            argv[argv.index("--repeats") + 1] = str(repeats)
        return C.run_case(SCRIPT, "classify", argv, args.workdir, label=f"{model}-{method}-{side}-s{stride}")

    if "pixel" in only:
        today = classify("pixel", "patch", args.pixel_size)
        dense = classify("pixel", "dense", args.pixel_size, compare=today["result"]["output"])
        res["pixel"] = {"today": today, "dense": dense,
                        "speedup": today["result"]["median_seconds"] / dense["result"]["median_seconds"]}
    if "patch" in only:
        res["patch"] = {}
        for stride in C.parse_int_list(args.strides):
            today = classify("patch", "patch", args.patch_size, stride,
                             repeats=1 if stride < 16 and not args.quick else None)
            dense = classify("patch", "dense", args.patch_size, stride, compare=today["result"]["output"])
            res["patch"][stride] = {"today": today, "dense": dense,
                                    "speedup": today["result"]["median_seconds"] / dense["result"]["median_seconds"]}
    if "scene" in only:
        res["scene"] = {}
        for model, stride in (("pixel", 1), ("patch", 32)):
            if model not in args.scene_models.split(","):
                continue
            for side in C.parse_int_list(args.scene_sizes):
                r = classify(model, "dense", side, stride)
                r["s2_tile_minutes_extrapolated"] = S2_TILE ** 2 / (r["result"]["mpx_per_s"] * 1e6) / 60
                res["scene"][f"{model}-{side}"] = r
    if "features" in only:
        res["features"] = C.run_case(SCRIPT, "features", child, args.workdir)
    if "qc" in only:
        res["qc"] = C.run_case(SCRIPT, "qc", child, args.workdir)
    if not args.keep_data:
        shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(outs, ignore_errors=True)
    return res


def print_results(res: dict) -> None:
    rows = []
    if "pixel" in res:
        p = res["pixel"]
        rows.append(["pixel model", p["today"]["result"]["mpx_per_s"], p["dense"]["result"]["mpx_per_s"],
                     p["speedup"], f"identical {p['dense']['result']['identical_to_baseline']}",
                     p["dense"]["load_average_1min"]])
    for stride, p in res.get("patch", {}).items():
        rows.append([f"patch model stride {stride}", p["today"]["result"]["mpx_per_s"],
                     p["dense"]["result"]["mpx_per_s"], p["speedup"],
                     f"agreement {p['dense']['result']['agreement_with_baseline']:.4f}", p["dense"]["load_average_1min"]])
    if "features" in res:
        f = res["features"]["result"]
        sps = f["samples_per_s"]
        rows.append(["features (samples/s)", sps["today"], sps["new"], sps["today"] and sps["new"] / sps["today"],
                     f"floor {sps['read_floor']:.0f}/s, max rel diff {f['max_relative_difference']:.1e}",
                     res["features"]["load_average_1min"]])
    if "qc" in res:
        q = res["qc"]["result"]
        rows.append(["QC counts (Mpx/s)", q["mpx_per_s"]["floor"], q["mpx_per_s"]["counts"],
                     1 / q["counts_over_floor"], f"counts/floor {q['counts_over_floor']:.2f}, "
                     f"reports {q['write_reports_seconds']:.2f} s", res["qc"]["load_average_1min"]])
    print(C.table(rows, ["case", "baseline", "new", "ratio", "check", "load"]))
    for key, r in res.get("scene", {}).items():
        print(f"  dense {key}: {r['result']['mpx_per_s']:.2f} Mpx/s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
              f"10980^2 tile ~{r['s2_tile_minutes_extrapolated']:.1f} min (load {r['load_average_1min']})")


def main(argv=None) -> dict:
    return C.bench_main(argv, __doc__, "dense", add_args,
                        ["--data", "--out-dir", "--model", "--method", "--side", "--stride", "--compare"],
                        CASES, run, print_results)


if __name__ == "__main__":
    main()
