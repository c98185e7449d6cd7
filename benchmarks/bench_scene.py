#!/usr/bin/env python
"""Benchmark 3 — scene classification: pixels/s and peak memory of ``classify_scene``.

Synthetic scenes of ``--sizes`` (square, pixels per side) with ``--bands`` uint16 bands
(tiled 256x256, pixel-interleaved as GDAL writes by default, uncompressed unless
``--compress``, nodata 0, random values 1..4000+offset) are written window by window
(bounded generation memory). Two models are trained for one epoch with
``geoml_hub.training.train_model`` on tiny synthetic ``.npy`` trees, so that they have
exactly the architecture that training builds by default (widths ``--widths``); the
weights do not matter for speed:

* ``patch``: 64x64 patches (``--patch``), classified with ``--stride`` (default 32, the
  default of ``classify_scene`` for 64-pixel patches);
* ``pixel``: patch size 1 (every pixel through the network).

Each (model, size) runs in its own fresh process:
``classify_scene(model, scene, out, stride=...)`` with its defaults (tile 512, batch 256,
CPU). Memory flat across sizes shows that it does not grow with the scene. GDAL's block
cache is left at GDAL's default (5 % of RAM, which holds decoded blocks of the scene and
so grows with the scene up to that cap) unless ``--gdal-cachemax`` says otherwise;
``--gdal-cachemax default,64`` runs every case both ways.

    python benchmarks/bench_scene.py --sizes 1000          # quick check
    python benchmarks/bench_scene.py                       # 5000^2 and 10000^2
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCRIPT = Path(__file__).resolve()
ROWS = 512


def add_args(p):
    p.add_argument("--sizes", default="5000,10000", help="scene sides in pixels, comma-separated")
    p.add_argument("--models", default="patch,pixel", help="which models: patch, pixel or both")
    p.add_argument("--bands", type=int, default=13)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--patch", type=int, default=64, help="patch size of the patch model")
    p.add_argument("--stride", type=int, default=32, help="stride of the patch model")
    p.add_argument("--widths", default="32,64,128", help="network widths (training default 32,64,128)")
    p.add_argument("--tile-size", type=int, default=512, help="classify_scene tile_size (its default 512)")
    p.add_argument("--batch-size", type=int, default=256, help="classify_scene batch_size (its default 256)")
    p.add_argument("--compress", default="none", help="compression of the generated scenes (default none)")
    p.add_argument("--gdal-cachemax", default="default",
                   help="GDAL_CACHEMAX (MB) of the classification processes, comma-separated to compare, e.g. "
                        "'default,64' ('default' = GDAL's own: 5%% of RAM)")
    p.add_argument("--seed", type=int, default=0)
    return p


# ---------------------------------------------------------------------------
# child cases


def case_generate(args) -> dict:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    side = int(args.size)
    path = Path(args.data)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "dtype": "uint16", "count": args.bands, "width": side, "height": side,
               "crs": "EPSG:32633", "transform": from_origin(500000, 6000000, 10, 10), "nodata": 0,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}
    if args.compress.lower() != "none":
        profile["compress"] = args.compress
    tmp = path.with_name("." + path.name)
    offsets = (300 * np.arange(args.bands)).astype(np.uint16)[:, None, None]
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, side, ROWS):
            h = min(ROWS, side - r)
            rng = np.random.default_rng([args.seed, r])
            block = rng.integers(1, 4000, size=(args.bands, h, side), dtype=np.uint16)
            block += offsets
            dst.write(block, window=Window(0, r, side, h))
    tmp.rename(path)
    return {"side": side, "bytes": path.stat().st_size, "seconds": time.perf_counter() - t0}


def case_models(args) -> dict:
    """Train the two models for one epoch on tiny synthetic trees with ``train_model``.

    This gives exactly the architecture ``train_model`` builds by default (whatever it
    is), with ``widths`` from ``--widths``; the weights do not matter for speed.
    """
    import numpy as np

    from geoml_hub.training import train_model

    out = Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    offsets = (300 * np.arange(args.bands))[:, None, None]
    paths = {}
    for kind, size, per_class in (("patch", args.patch, 4), ("pixel", 1, 64)):
        tree = out / f"tree-{kind}"
        for k in range(args.classes):
            (tree / f"class_{k:02d}").mkdir(parents=True, exist_ok=True)
            x = rng.integers(1, 4000, size=(per_class, args.bands, size, size)) + offsets + 50 * k
            np.save(tree / f"class_{k:02d}" / "samples.npy", x.astype(np.uint16))
        res = train_model(tree, out / f"{kind}.pt", epochs=1, val_fraction=0.0, batch_size=16,
                          widths=tuple(C.parse_int_list(args.widths)), device="cpu", seed=args.seed)
        paths[kind] = str(res.model_path)
    return {"models": paths}


def case_baseline(args) -> dict:
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import rasterio  # noqa: F401
    import torch  # noqa: F401

    import geoml_hub.classification  # noqa: F401
    return {"rss_after_imports_mib": C.PeakSampler.current_mib()}


def case_classify(args) -> dict:
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import rasterio  # noqa: F401
    import torch

    from geoml_hub.classification import classify_scene
    from geoml_hub.models import load_model

    rss0 = C.PeakSampler.current_mib()
    out = Path(args.out_file)
    with C.PeakSampler() as sampler:
        t0 = time.perf_counter()
        model = load_model(args.model, device="cpu")
        t1 = time.perf_counter()
        res = classify_scene(model, args.data, out, stride=args.stride, tile_size=args.tile_size,
                             batch_size=args.batch_size, device="cpu")
        t2 = time.perf_counter()
    out.unlink(missing_ok=True)
    return {"pixels": res.pixels, "nodata_pixels": res.nodata_pixels, "stride": res.stride,
            "load_seconds": t1 - t0, "seconds": t2 - t1, "pixels_per_second": res.pixels / (t2 - t1),
            "torch_threads": torch.get_num_threads(), "rss_before_mib": rss0, **sampler.report()}


CASES = {"generate": case_generate, "models": case_models, "baseline": case_baseline, "classify": case_classify}


# ---------------------------------------------------------------------------
# parent


def run(args) -> dict:
    sizes = sorted(C.parse_int_list(args.sizes))
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    print(f"== scene classification: sizes {sizes}, {args.bands} bands uint16, models {kinds}, "
          f"patch {args.patch} stride {args.stride}, widths {args.widths}")
    ddir = args.workdir / "data"
    child = ["--workdir", str(args.workdir), "--bands", str(args.bands), "--classes", str(args.classes),
             "--patch", str(args.patch), "--stride", str(args.stride), "--widths", args.widths,
             "--tile-size", str(args.tile_size), "--batch-size", str(args.batch_size), "--compress", args.compress,
             "--seed", str(args.seed)]
    results = {"sizes": sizes, "bands": args.bands, "models": kinds, "patch": args.patch, "stride": args.stride,
               "widths": args.widths, "tile_size": args.tile_size, "batch_size": args.batch_size,
               "compress": args.compress, "gdal_cachemax": args.gdal_cachemax, "generation": {}}
    need = sum(s * s * args.bands * 2 for s in sizes
               if not (ddir / f"scene-{s}-b{args.bands}-{args.compress}-s{args.seed}.tif").exists())
    if need:
        C.require_disk(args.workdir, need / 1024 ** 3, "scenes (uncompressed)")
    mdir = args.workdir / "data" / f"scene-models-b{args.bands}-k{args.classes}-p{args.patch}-w{args.widths.replace(',', '_')}"
    if (mdir / "models.json").exists():
        models = C.json.loads((mdir / "models.json").read_text())
        print(f"  reusing models in {mdir}")
    else:
        models = C.run_case(SCRIPT, "models", child + ["--data", str(mdir)], args.workdir)["result"]["models"]
        (mdir / "models.json").write_text(C.json.dumps(models))
    results["baseline"] = C.run_case(SCRIPT, "baseline", child, args.workdir)
    caches = [c.strip() for c in args.gdal_cachemax.split(",") if c.strip()]
    cases = []
    for s in sizes:
        scene = ddir / f"scene-{s}-b{args.bands}-{args.compress}-s{args.seed}.tif"
        if not scene.exists():
            results["generation"][s] = C.run_case(SCRIPT, "generate", child + ["--data", str(scene), "--size", str(s)],
                                                  args.workdir, label=f"generate-{s}")["result"]
        else:
            print(f"  reusing {scene}")
        for kind in kinds:
            for cache in caches:
                env = None if cache == "default" else {"GDAL_CACHEMAX": str(int(cache))}
                out = args.workdir / "out" / f"classified-{kind}-{s}.tif"
                r = C.run_case(SCRIPT, "classify", child + ["--data", str(scene), "--model", models[kind],
                                                            "--out-file", str(out)], args.workdir, env=env,
                               label=f"{kind}-{s}-cache_{cache}")
                r["model"], r["size"], r["gdal_cachemax"] = kind, s, cache
                cases.append(r)
        if not args.keep_data:
            scene.unlink(missing_ok=True)
    results["cases"] = cases
    if not args.keep_data:
        shutil.rmtree(mdir, ignore_errors=True)
    return results


def print_results(res: dict) -> None:
    rows = []
    for r in res["cases"]:
        x = r["result"]
        rows.append([r["model"], f"{r['size']}^2", x["stride"], r["gdal_cachemax"], x["seconds"],
                     x["pixels_per_second"] / 1e6, r["peak_rss_mib"], x.get("sampled_peak_RssAnon_mib")])
    print(C.table(rows, ["model", "scene", "stride", "GDAL_CACHEMAX", "seconds", "Mpixel/s", "peak RSS MiB",
                         "~anon MiB"]))
    print(f"  process RSS after imports only: {res['baseline']['peak_rss_mib']:.0f} MiB; "
          "GDAL_CACHEMAX 'default' = GDAL's own (5% of RAM)")


def main(argv=None) -> dict:
    res = C.bench_main(argv, __doc__, "scene", add_args, ['--data', '--size', '--model', '--out-file'], CASES, run, print_results)
    return res


if __name__ == "__main__":
    main()
