#!/usr/bin/env python
"""Run the four geoml-hub benchmarks and write one JSON of results (standard library only).

    .venv/bin/python benchmarks/run_all.py                 # full sizes (see docs/benchmarks.md)
    .venv/bin/python benchmarks/run_all.py --quick         # small sizes, ~3-5 minutes
    .venv/bin/python benchmarks/run_all.py --only qc,training --qc-pixels 1e7

Each benchmark script can also be run alone (``benchmarks/bench_*.py --help``). Every
measured case runs in a fresh child process; this process imports nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import bench_balancing  # noqa: E402
import bench_qc  # noqa: E402
import bench_scene  # noqa: E402
import bench_training  # noqa: E402

BENCHES = ("qc", "balancing", "scene", "training")

QUICK = {"qc_pixels": "1e6", "balance_counts": "500,1000,2000", "balance_file_size": "100,400",
         "scene_sizes": "500,1000", "train_epochs": 2, "train_repeats": 1}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR,
                   help=f"generated data, outputs and logs (default {C.DEFAULT_WORKDIR})")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default WORKDIR/results.json)")
    p.add_argument("--only", default=",".join(BENCHES), help=f"subset of {','.join(BENCHES)}")
    p.add_argument("--quick", action="store_true", help="small sizes for a check: " + str(QUICK))
    p.add_argument("--keep-data", action="store_true", help="keep generated data for a re-run")
    p.add_argument("--qc-pixels", default="1e8", help="QC: pixels per raster (default 1e8 = 10000^2)")
    p.add_argument("--balance-counts", default="25000,50000,100000", help="balancing: sample counts")
    p.add_argument("--balance-file-size", default="1000,5000", help="balancing: samples per .npy file, MIN,MAX")
    p.add_argument("--scene-sizes", default="5000,10000", help="scene: sides in pixels")
    p.add_argument("--scene-models", default="patch,pixel", help="scene: patch, pixel or both")
    p.add_argument("--scene-stride", type=int, default=32, help="scene: stride of the 64x64 patch model")
    p.add_argument("--scene-gdal-cachemax", default="default", help="e.g. 'default,64' to run both ways")
    p.add_argument("--train-data", type=Path, default=bench_training.EUROSAT, help="training: sample tree")
    p.add_argument("--train-synthetic", type=int, default=0, help="training: N synthetic samples instead")
    p.add_argument("--train-epochs", type=int, default=10, help="training: epochs of every run")
    p.add_argument("--train-repeats", type=int, default=2, help="training: alternated runs per case")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    out = args.out or args.workdir / "results.json"
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    base = ["--workdir", str(args.workdir)] + (["--keep-data"] if args.keep_data else [])
    plans = {
        "qc": (bench_qc, ["--pixels", args.qc_pixels]),
        "balancing": (bench_balancing, ["--counts", args.balance_counts, "--file-size", args.balance_file_size]),
        "scene": (bench_scene, ["--sizes", args.scene_sizes, "--models", args.scene_models,
                                "--stride", str(args.scene_stride), "--gdal-cachemax", args.scene_gdal_cachemax]),
        "training": (bench_training, ["--data", str(args.train_data), "--synthetic", str(args.train_synthetic),
                                      "--epochs", str(args.train_epochs), "--repeats", str(args.train_repeats)]),
    }
    report = {"machine": C.machine_info(), "libraries": C.library_versions(), "command": " ".join(sys.argv),
              "results": {}, "errors": {}, "seconds": {}}
    print("machine:", {k: v for k, v in report["machine"].items() if k != "platform"})
    print("libraries:", report["libraries"])
    for name in only:
        module, extra = plans[name]
        t0 = time.perf_counter()
        try:
            report["results"][name] = module.main(base + extra + ["--out", str(args.workdir / f"{name}.json")])
        except (Exception, SystemExit) as exc:  # keep going: one failing benchmark must not hide the others
            report["errors"][name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            print(f"!! {name} failed: {report['errors'][name][:2000]}")
        report["seconds"][name] = round(time.perf_counter() - t0, 1)
        C.write_json(out, report)
        print()
    print(summary(report))
    print(f"\nresults: {out}")
    return 1 if report["errors"] else 0


def summary(report) -> str:
    """The headline figures of every benchmark, one line each."""
    lines = ["== summary"]
    r = report["results"]
    if "qc" in r:
        q = r["qc"]
        if "pycm" in q:
            lines.append(f"QC {q['pixels']:,} px: ours {q['ours']['seconds']:.2f} s / {q['ours']['peak_rss_mib']:.0f} MiB; "
                         f"PyCM {q['pycm']['seconds']:.2f} s / {q['pycm']['peak_rss_mib']:.0f} MiB; "
                         f"time ratio {q['time_ratio_pycm_over_ours']:.1f}x (>=20), "
                         f"memory ratio {q['memory_ratio_ours_over_pycm']:.3f} (<=0.333), "
                         f"statistics identical: {q['statistics']['equal']}")
    if "balancing" in r:
        for c in r["balancing"]["cases"]:
            lines.append(f"balancing {c['samples']:>7,} samples: {c['samples_per_second_with_write']:.0f} samples/s, "
                         f"peak RSS {c['peak_rss_mib']:.0f} MiB")
    if "scene" in r:
        for c in r["scene"]["cases"]:
            x = c["result"]
            lines.append(f"scene {c['model']:<5} {c['size']}^2 (cache {c['gdal_cachemax']}): "
                         f"{x['pixels_per_second'] / 1e6:.3f} Mpixel/s, {x['seconds']:.1f} s, "
                         f"peak RSS {c['peak_rss_mib']:.0f} MiB")
    if "training" in r:
        t = r["training"]
        for v, c in t["cases"].items():
            ratio = ""
            if f"ratio_{v}_epoch_only" in t:
                ratio = (f", ratio to plain {t[f'ratio_{v}_epoch_only']:.3f} (epochs) / "
                         f"{t[f'ratio_{v}_whole_call']:.3f} (whole call) (>=0.9)")
            lines.append(f"training {v:<10}: {c['epoch_samples_per_second']:.1f} samples/s (epochs), "
                         f"{c['call_samples_per_second']:.1f} (call){ratio}")
    for name, err in report["errors"].items():
        lines.append(f"{name}: FAILED ({err.splitlines()[-1][:200]})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
