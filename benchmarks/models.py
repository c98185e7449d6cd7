#!/usr/bin/env python
"""Cross-validated overall accuracy of the model families: the tables of docs/training.md.

* EuroSAT (``--data eurosat``): the 269 patches of ``../shared/data/eurosat_ms``, 5-fold
  stratified cross-validation (:func:`geoml_hub.selection.cross_validate`, seed 0), and the
  source repository's 216 / 53 split (``MANIFEST.csv``).
* ``--baseline``: a plain random forest (500 trees) on per-band mean and standard deviation
  only (26 features), on the same folds and the same 216 / 53 split.
* Options: ``--candidates`` (default forest,boosting,ensemble), ``--n-estimators``,
  ``--no-indices``.

Example::

    python benchmarks/models.py --candidates forest,boosting,ensemble,cnn --out /tmp/models.json
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


def source_split(sample_set):
    side = {Path(r["file"]).name: r["source_path"].split("/")[2]
            for r in csv.DictReader(open(DATA / "MANIFEST.csv", encoding="utf-8"))}
    test = np.array([side[s.file.name] == "test" for s in sample_set.samples])
    return np.flatnonzero(~test), np.flatnonzero(test)


def baseline(sample_set) -> dict:
    """Random forest, 500 trees, on per-band mean and standard deviation: the same 5 folds as
    ``cross_validate`` (StratifiedKFold, seed 0) and the source split."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold

    labels = sample_set.labels()
    x = sample_set.read()
    flat = x.reshape(len(x), x.shape[1], -1)
    f = np.concatenate([flat.mean(2), flat.std(2)], 1)
    fold_oa = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(f, labels):
        rf = RandomForestClassifier(500, random_state=0, n_jobs=-1).fit(f[tr], labels[tr])
        fold_oa.append(float((rf.predict(f[te]) == labels[te]).mean()))
    tr, te = source_split(sample_set)
    rf = RandomForestClassifier(500, random_state=0, n_jobs=-1).fit(f[tr], labels[tr])
    out = {"mean_overall_accuracy": round(float(np.mean(fold_oa)), 4), "std_overall_accuracy":
           round(float(np.std(fold_oa)), 4), "source_oa": round(float((rf.predict(f[te]) == labels[te]).mean()), 4)}
    print(f"BASELINE rf mean+std: 5-fold {out['mean_overall_accuracy']:.3f} ± {out['std_overall_accuracy']:.3f}, "
          f"source split {out['source_oa']:.3f}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", default="forest,boosting,ensemble")
    p.add_argument("--n-estimators", type=int, default=None)
    p.add_argument("--no-indices", action="store_true")
    p.add_argument("--skip-source", action="store_true", help="no 216/53 split")
    p.add_argument("--baseline", action="store_true", help="plain random forest on band mean + std, same folds")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    from geoml_hub.models import load_model
    from geoml_hub.samples import open_tree
    from geoml_hub.selection import cross_validate, parse_candidates
    from geoml_hub.training import train_model

    sample_set = open_tree(DATA)
    train = {"indices": not args.no_indices}
    if args.n_estimators:
        train["n_estimators"] = args.n_estimators
    results = {"data": str(DATA), "n": len(sample_set), "train": train}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cv = cross_validate(sample_set, tmp, parse_candidates(args.candidates), 5, 0, train,
                            progress=lambda f, m: print(m, flush=True))
        results["kfold"] = cv["candidates"]
        results["kfold_seconds"] = round(time.perf_counter() - t0, 1)
        for row in cv["candidates"]:
            print(f"KFOLD {row['model']:10s} mean {row['mean_overall_accuracy']:.3f} ± "
                  f"{row['std_overall_accuracy']:.3f}  pooled {row['pooled_overall_accuracy']:.3f}  "
                  f"{row['seconds']:.0f} s", flush=True)
        if not args.skip_source:
            tr, te = source_split(sample_set)
            labels = sample_set.labels()
            x = sample_set.read()
            results["source"] = {}
            for cand in parse_candidates(args.candidates):
                t0 = time.perf_counter()
                res = train_model(sample_set.subset(tr), Path(tmp) / "m.pt", device="cpu",
                                  **{**train, "model": cand, "seed": 0})
                m = load_model(res.model_path, device="cpu")
                oa = float((m.predict_proba(x[te][:, [b - 1 for b in m.bands]]).argmax(1) == labels[te]).mean())
                results["source"][cand] = {"oa": round(oa, 4), "seconds": round(time.perf_counter() - t0, 1)}
                print(f"SOURCE {cand:10s} OA {oa:.3f} ({len(tr)} train / {len(te)} test)", flush=True)
    if args.baseline:
        results["baseline"] = baseline(sample_set)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
