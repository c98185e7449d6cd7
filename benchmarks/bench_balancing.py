#!/usr/bin/env python
"""Benchmark 2 — sample balancing: throughput and peak memory of ``balance_samples`` vs sample count.

A synthetic training-sample tree of ``max(--counts)`` samples is generated once:
``--classes`` classes with unbalanced sizes (weights ~ 1/rank^0.8), ``.npy`` containers of
``--file-size`` samples each (random in a range), samples ``--bands``x``--patch``x``--patch``
uint16. Each class has 3 sub-populations (per-band mean offset and noise amplitude) so
k-means has real structure to find. Files are written with ``numpy.lib.format.open_memmap``
in chunks of 256 samples, so generation memory is bounded.

The smaller counts are sub-trees of symbolic links to the first files of each class
(no extra disk; file boundaries are placed so that every count is exact and has the same
class proportions). Each count runs in its own fresh process:

    open_tree(tree) -> balance_samples(set) -> result.write(out_dir, plot=True)

and reports samples/s and peak RSS. Flat peak memory across counts shows that memory
does not grow with the number of samples (beyond the small per-sample bookkeeping).

    python benchmarks/bench_balancing.py --counts 2000 --file-size 100,400     # quick check
    python benchmarks/bench_balancing.py                                        # 25k, 50k, 100k
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SCRIPT = Path(__file__).resolve()
CHUNK = 256


def add_args(p):
    p.add_argument("--counts", default="25000,50000,100000", help="sample counts, comma-separated")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--bands", type=int, default=13)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--file-size", default="1000,5000", help="samples per .npy file: MIN,MAX (random in range)")
    p.add_argument("--no-plot", action="store_true", help="write without clusters.png")
    p.add_argument("--seed", type=int, default=0)
    return p


def class_sizes(total: int, classes: int):
    w = [1.0 / (k + 1) ** 0.8 for k in range(classes)]
    s = sum(w)
    sizes = [max(1, int(round(total * x / s))) for x in w]
    sizes[0] += total - sum(sizes)
    return sizes


def data_dir(args, total: int) -> Path:
    counts = "_".join(str(c) for c in sorted(C.parse_int_list(args.counts)))
    return args.workdir / "data" / (f"balance-n{counts}-k{args.classes}-b{args.bands}-p{args.patch}"
                                    f"-f{args.file_size.replace(',', '_')}-s{args.seed}")


# ---------------------------------------------------------------------------
# child cases


def case_generate(args) -> dict:
    import numpy as np

    counts = sorted(C.parse_int_list(args.counts))
    total = counts[-1]
    root = Path(args.data)
    lo, hi = C.parse_int_list(args.file_size)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    files = {}
    nbytes = 0
    for k, size in enumerate(class_sizes(total, args.classes)):
        name = f"class_{k:02d}"
        (root / name).mkdir(parents=True, exist_ok=True)
        # 3 sub-populations per class: per-band mean offsets and noise amplitudes
        base = 800 + 400 * k + 60 * np.arange(args.bands)
        offsets = rng.integers(0, 600, size=(3, args.bands))
        scales = np.array([1, 2, 4], dtype=np.uint16)
        # file boundaries fall on the class size of every smaller count, so that the
        # sub-trees of the smaller counts (first files of each class) are exact
        stops = sorted({min(class_sizes(c, args.classes)[k], size) for c in counts} | {size})
        done, part = 0, 0
        files[name] = []
        while done < size:
            stop = next(b for b in stops if b > done)
            n = min(stop - done, int(rng.integers(lo, hi + 1)))
            path = root / name / f"part_{part:04d}.npy"
            arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16,
                                            shape=(n, args.bands, args.patch, args.patch))
            for s in range(0, n, CHUNK):
                m = min(CHUNK, n - s)
                sub = rng.integers(0, 3, size=m)
                noise = rng.integers(0, 256, size=(m, args.bands, args.patch, args.patch), dtype=np.uint16)
                noise *= scales[sub][:, None, None, None]
                noise += (base + offsets[sub]).astype(np.uint16)[:, :, None, None]
                arr[s:s + m] = noise
            arr.flush()
            del arr
            files[name].append([path.name, n])
            nbytes += path.stat().st_size
            done += n
            part += 1
    (root / "files.json").write_text(json.dumps(files))
    return {"samples": total, "files": sum(len(v) for v in files.values()), "bytes": nbytes,
            "seconds": time.perf_counter() - t0}


def case_baseline(args) -> dict:
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn.cluster  # noqa: F401

    import geoml_hub.balancing  # noqa: F401
    return {"rss_after_imports_mib": C.PeakSampler.current_mib()}


def case_balance(args) -> dict:
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn.cluster  # noqa: F401

    from geoml_hub.balancing import balance_samples
    from geoml_hub.samples import open_tree

    rss0 = C.PeakSampler.current_mib()
    out = Path(args.out_dir)
    with C.PeakSampler() as sampler:
        t0 = time.perf_counter()
        ss = open_tree(args.data)
        t1 = time.perf_counter()
        res = balance_samples(ss, seed=0)
        t2 = time.perf_counter()
        res.write(out, plot=not args.no_plot)
        t3 = time.perf_counter()
    s = res.summary
    return {"samples": len(ss), "open_seconds": t1 - t0, "balance_seconds": t2 - t1, "write_seconds": t3 - t2,
            "seconds": t3 - t0, "total_after": s["total_after"], "ratio_before": s["ratio_before"],
            "ratio_after": s["ratio_after"], "rss_before_mib": rss0, **sampler.report()}


CASES = {"generate": case_generate, "baseline": case_baseline, "balance": case_balance}


# ---------------------------------------------------------------------------
# parent


def make_subtree(full: Path, sub: Path, total: int, classes: int) -> int:
    """Symlink the first files of each class of ``full`` into ``sub`` until each class has its share."""
    files = json.loads((full / "files.json").read_text())
    if sub.exists():
        shutil.rmtree(sub)
    n = 0
    for name, want in zip(sorted(files), class_sizes(total, classes)):
        (sub / name).mkdir(parents=True)
        have = 0
        for fname, count in files[name]:
            if have >= want:
                break
            (sub / name / fname).symlink_to(full / name / fname)
            have += count
        n += have
    return n


def run(args) -> dict:
    counts = sorted(C.parse_int_list(args.counts))
    total = counts[-1]
    sample_bytes = args.bands * args.patch * args.patch * 2
    print(f"== balancing: counts {counts}, {args.classes} classes, samples {args.bands}x{args.patch}x{args.patch} "
          f"uint16, files of {args.file_size} samples")
    data = data_dir(args, total)
    child = ["--workdir", str(args.workdir), "--classes", str(args.classes), "--bands", str(args.bands),
             "--patch", str(args.patch), "--file-size", args.file_size, "--seed", str(args.seed)]
    gen = None
    if not (data / "files.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        C.require_disk(args.workdir, total * sample_bytes / 1024 ** 3, f"{total} samples")
        gen = C.run_case(SCRIPT, "generate", child + ["--data", str(data), "--counts", args.counts], args.workdir)
    else:
        print(f"  reusing {data}")
    results = {"counts": counts, "classes": args.classes, "sample_shape": [args.bands, args.patch, args.patch],
               "dtype": "uint16", "file_size": args.file_size, "data": str(data), "plot": not args.no_plot,
               "generation": gen and gen["result"], "bytes_per_sample": sample_bytes}
    results["baseline"] = C.run_case(SCRIPT, "baseline", child, args.workdir)
    cases = []
    for n in counts:
        tree = data if n == total else args.workdir / "data" / f"{data.name}-sub{n}"
        actual = n if n == total else make_subtree(data, tree, n, args.classes)
        out = args.workdir / "out" / f"balance-{n}"
        shutil.rmtree(out, ignore_errors=True)
        r = C.run_case(SCRIPT, "balance", child + ["--data", str(tree), "--out-dir", str(out)]
                       + (["--no-plot"] if args.no_plot else []), args.workdir, label=f"balance-{actual}")
        res = r["result"]
        r["samples"] = actual
        r["samples_per_second_balance"] = actual / (res["open_seconds"] + res["balance_seconds"])
        r["samples_per_second_with_write"] = actual / res["seconds"]
        r["data_gib"] = actual * sample_bytes / 1024 ** 3
        cases.append(r)
        if tree != data:
            shutil.rmtree(tree, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    results["cases"] = cases
    if not args.keep_data:
        shutil.rmtree(data, ignore_errors=True)
    return results


def print_results(res: dict) -> None:
    rows = []
    for r in res["cases"]:
        x = r["result"]
        rows.append([r["samples"], round(r["data_gib"], 2), x["open_seconds"], x["balance_seconds"],
                     x["write_seconds"], r["samples_per_second_with_write"], r["peak_rss_mib"],
                     x.get("sampled_peak_RssAnon_mib"), x.get("sampled_peak_RssFile_mib"),
                     f"{x['total_after']} ({x['ratio_before']:.1f}->{x['ratio_after']:.1f})"])
    print(C.table(rows, ["samples", "GiB", "open s", "balance s", "write s", "samples/s", "peak RSS MiB",
                         "~anon MiB", "~file MiB", "kept (max/min class)"]))
    print(f"  process RSS after imports only: {res['baseline']['peak_rss_mib']:.0f} MiB; "
          "samples/s = samples / (open + balance + write)")


def main(argv=None) -> dict:
    res = C.bench_main(argv, __doc__, "balancing", add_args, ['--data', '--out-dir'], CASES, run, print_results)
    return res


if __name__ == "__main__":
    main()
