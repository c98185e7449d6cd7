#!/usr/bin/env python
"""Held-out accuracy on the 269 real EuroSAT patches: the figures of docs/training.md.

* ``--protocol kfold`` (default): 5-fold stratified cross-validation (folds seeded with
  ``numpy.random.default_rng(7)``, fold ``f`` trains with ``seed=f``); every patch is tested
  once; overall accuracy over all 269 predictions, without and with test-time augmentation.
* ``--protocol source``: the source repository's own train/test split (216 / 53 patches,
  the ``train``/``test`` folder in ``MANIFEST.csv``), with ``--seeds`` training seeds.
* ``--baseline``: random forests (500 trees) on band statistics, same folds.

Examples::

    python benchmarks/accuracy.py --baseline
    python benchmarks/accuracy.py --config defaults '{}'
    python benchmarks/accuracy.py --config crop48 '{"crop": 48}' --config nocrop '{"crop": null}'
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eurosat_ms"


def folds(labels: np.ndarray, k: int = 5, seed: int = 7) -> np.ndarray:
    """Stratified fold number of every sample."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        fold[members] = np.arange(len(members)) % k
    return fold


def source_split(sample_set):
    side = {Path(r["file"]).name: r["source_path"].split("/")[2]
            for r in csv.DictReader(open(DATA / "MANIFEST.csv", encoding="utf-8"))}
    test = np.array([side[s.file.name] == "test" for s in sample_set.samples])
    return np.flatnonzero(~test), np.flatnonzero(test)


def baseline(x: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> dict:
    from sklearn.ensemble import RandomForestClassifier

    flat = x.reshape(len(x), x.shape[1], -1).astype(np.float64)

    def nd(a, b):  # normalised difference of bands a, b (0-based, EuroSAT order B01..B12, B8A)
        return ((x[:, a] - x[:, b]) / (x[:, a] + x[:, b] + 1e-6)).reshape(len(x), -1)

    idx = np.stack([nd(7, 3), nd(2, 7), nd(10, 7), nd(7, 11)], 1)  # NDVI, NDWI, NDBI, NBR-like
    stats = [flat.mean(2), flat.std(2)]
    quant = [np.percentile(flat, q, axis=2) for q in (10, 50, 90)]
    feats = {"rf_mean_std": np.concatenate(stats, 1),
             "rf_mean_std_quantiles": np.concatenate(stats + quant, 1),
             "rf_mean_std_quantiles_indices": np.concatenate(stats + quant + [idx.mean(2), idx.std(2)], 1)}
    out = {}
    for name, f in feats.items():
        pred = np.empty(len(labels), dtype=int)
        for k in np.unique(fold):
            tr, te = fold != k, fold == k
            pred[te] = RandomForestClassifier(500, random_state=0, n_jobs=1).fit(f[tr], labels[tr]).predict(f[te])
        out[name] = round(float((pred == labels).mean()), 4)
        print(f"{name:32s} OA {out[name]:.3f}", flush=True)
    return out


def run_config(name: str, overrides: dict, sample_set, x, labels, protocol: str, seeds) -> dict:
    from geoml_hub.models import load_model
    from geoml_hub.training import train_model

    runs = []
    if protocol == "kfold":
        fold = folds(labels)
        splits = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k), k) for k in range(fold.max() + 1)]
    else:
        tr, te = source_split(sample_set)
        splits = [(tr, te, s) for s in seeds]
    pred = {False: np.full(len(labels), -1), True: np.full(len(labels), -1)}
    with tempfile.TemporaryDirectory() as tmp:
        for tr, te, seed in splits:
            t0 = time.perf_counter()
            res = train_model(sample_set.subset(tr), Path(tmp) / "m.pt", seed=seed, device="cpu", **overrides)
            model = load_model(res.model_path, device="cpu")
            acc = {}
            for tta in (False, True):
                p = model.predict_proba(x[te], tta=tta).argmax(1)
                pred[tta][te] = p
                acc[tta] = float((p == labels[te]).mean())
            runs.append({"seed": seed, "n_test": int(len(te)), "oa": acc[False], "oa_tta": acc[True],
                         "epochs_run": len(res.history), "best_epoch": res.best_epoch,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{name} seed {seed}: OA {acc[False]:.3f} (TTA {acc[True]:.3f}), {runs[-1]['seconds']:.0f} s",
                  flush=True)
    if protocol == "kfold":
        oa, oa_tta = (float((pred[t] == labels).mean()) for t in (False, True))
    else:
        oa, oa_tta = (float(np.mean([r[k] for r in runs])) for k in ("oa", "oa_tta"))
    result = {"overrides": overrides, "protocol": protocol, "oa": round(oa, 4), "oa_tta": round(oa_tta, 4),
              "seconds_per_run": round(float(np.mean([r["seconds"] for r in runs])), 1), "runs": runs}
    print(f"RESULT {name}: OA {oa:.3f}, with TTA {oa_tta:.3f}, {result['seconds_per_run']:.0f} s per run", flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", nargs=2, action="append", metavar=("NAME", "JSON"), default=[],
                   help="TrainConfig overrides to evaluate, e.g. defaults '{}'")
    p.add_argument("--protocol", choices=["kfold", "source"], default="kfold")
    p.add_argument("--seeds", default="0,1", help="training seeds for --protocol source")
    p.add_argument("--baseline", action="store_true", help="random-forest baselines on the same folds")
    p.add_argument("--out", type=Path, help="write the results as JSON")
    args = p.parse_args(argv)

    from geoml_hub.samples import open_tree

    sample_set = open_tree(DATA)
    labels = sample_set.labels()
    x = sample_set.read()
    results = {"data": str(DATA), "n": len(labels)}
    if args.baseline:
        results["baseline"] = baseline(x, labels, folds(labels))
    for name, text in args.config:
        results[name] = run_config(name, json.loads(text), sample_set, x, labels, args.protocol,
                                   [int(s) for s in args.seeds.split(",")])
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
