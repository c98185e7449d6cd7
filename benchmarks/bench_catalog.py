#!/usr/bin/env python
"""Benchmark 9 — the STAC catalogue (issue 16.2): a full build, a rebuild with nothing changed
(the cache: no raster opened) and a rebuild after one file changed.

Two data roots: the real ``../shared/data`` (3 rasters + the 269 EuroSAT patches of a sample
tree), and a synthetic root of ``--scenes`` symbolic links to the Chiapas scene in separate
folders (so many scene items; the first is a copy, the one file \"touched\"). Each case is built
``--rounds`` times into a temporary folder with :func:`geoml_hub.catalog.build_catalog` and
:func:`geoml_hub.catalog.save_catalog` (what ``geoml-hub catalog`` and the WPS do); reported:
the median wall time and the number of files read (the cache's misses).

Usage: ``python benchmarks/bench_catalog.py [--rounds 5] [--scenes 500]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
SCENE = DATA / "landsat7_chiapas" / "LE70220491999322EDC01_stack.gtif"


def build(roots, out: Path, cache_file: Path):
    from geoml_hub import catalog as stac

    cache = stac.Cache(cache_file)
    stac.save_catalog(stac.build_catalog(roots, stac.file_hrefs(out), cache), out)
    cache.save()
    return cache.reads


def case(roots, work: Path, rounds: int, touch=None):
    """Median seconds and files read of: a cold build, a warm rebuild, a rebuild after ``touch``."""
    out = {}
    cold, warm, touched = [], [], []
    reads = {}
    for r in range(rounds):
        cache_file = work / f"cache-{r}.json"
        target = work / f"cat-{r}"
        t = time.perf_counter()
        reads["cold"] = build(roots, target, cache_file)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        reads["unchanged"] = build(roots, target, cache_file)
        warm.append(time.perf_counter() - t)
        if touch is not None:
            st = touch.stat()
            os.utime(touch, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9 * (r + 1)))
            t = time.perf_counter()
            reads["one touched"] = build(roots, target, cache_file)
            touched.append(time.perf_counter() - t)
        shutil.rmtree(target, ignore_errors=True)
    out["cold"] = {"seconds": statistics.median(cold), "read": reads["cold"]}
    out["unchanged"] = {"seconds": statistics.median(warm), "read": reads["unchanged"]}
    if touched:
        out["one touched"] = {"seconds": statistics.median(touched), "read": reads["one touched"]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scenes", type=int, default=500)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="geoml-bench-stac-") as tmp:
        work = Path(tmp)
        results["shared data (3 rasters, 269 patches)"] = case({"data": DATA}, work, args.rounds)
        synth = work / "scenes"
        for i in range(args.scenes):
            d = synth / f"s{i:04d}"
            d.mkdir(parents=True)
            if i == 0:  # a copy: the file "one touched" changes (the shared data is never touched)
                shutil.copy(SCENE, d / f"scene_{i:04d}.gtif")
            else:
                os.symlink(SCENE, d / f"scene_{i:04d}.gtif")
        first = synth / "s0000" / "scene_0000.gtif"
        results[f"{args.scenes} scene items"] = case({"many": synth}, work, args.rounds, touch=first)
    width = max(len(k) for k in results)
    print(f"{'data':<{width}}  {'case':<12} {'median s':>9} {'rasters read':>13}")
    for name, cases in results.items():
        for kind, v in cases.items():
            print(f"{name:<{width}}  {kind:<12} {v['seconds']:>9.3f} {v['read']:>13}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
