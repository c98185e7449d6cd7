"""Model selection by cross-validation: which model family to train.

:func:`cross_validate` evaluates candidate families (:data:`geoml_hub.models.FAMILIES`) by
k-fold cross-validation on a training sample and keeps the best mean overall accuracy:

* patch trees: stratified folds (``sklearn.model_selection.StratifiedKFold``);
* samples extracted from a scene: whole regions per fold
  (``sklearn.model_selection.StratifiedGroupKFold`` with the region as the group), as
  iota2's validation does — never random pixels, whose neighbours would sit in the
  training folds and inflate the accuracy.

The tree families share one feature matrix; the ``ensemble`` candidate's probabilities are
the mean of the ``forest``'s and the ``boosting``'s of the same fold — exactly what the soft
``VotingClassifier`` of :func:`geoml_hub.training.make_estimator` computes (same estimators,
same seeds). The ``cnn`` candidate trains :func:`geoml_hub.training.train_model` per fold
(tens of seconds each on 2 cores; not a default candidate).

Outputs: ``cv.csv`` (one row per candidate and fold) and ``cv.png`` (mean ± standard
deviation per candidate, with the folds as points).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import ParameterError
from .features import compute_features
from .fileio import PathLike, save_figure, write_csv
from .models import FAMILIES, load_model
from .params import param
from .progress import ProgressCallback, report, scaled
from .samples import SampleSet
from .training import (TrainConfig, _replace, _select_bands, make_estimator, single_thread, train_model,
                       tree_features)

CV_HEADER = ("model", "fold", "overall_accuracy", "n_train", "n_test", "seconds")


@dataclass(frozen=True)
class SelectParams:
    """The model-selection parameters of the pipelines, declared once (:mod:`geoml_hub.params`):
    the ``pipeline`` command's options and ``docs/parameters.md`` come from these fields.

    Attributes
    ----------
    candidates : str
        Comma-separated model families to cross-validate.
    cv_folds : int
        Folds of the cross-validation.
    """

    candidates: str = param(
        "forest,boosting,ensemble", "string", "Candidate models",
        "Comma-separated model families the pipeline cross-validates (cnn, forest, boosting, ensemble); the best "
        "mean overall accuracy is retrained on all training samples. cnn costs about a minute per fold on 2 CPU "
        "cores; a single family skips nothing: its cross-validation is still reported.", wps=None)
    cv_folds: int = param(5, "integer", "Cross-validation folds",
                          "Folds of the model selection: stratified folds of patches, whole regions per fold for "
                          "scenes (fewer when a class has fewer regions).", minimum=2, maximum=20, unit="folds",
                          wps=None)


def parse_candidates(text: str) -> List[str]:
    """``"forest,ensemble"`` → ``['forest', 'ensemble']``.

    Raises
    ------
    ParameterError
        If a name is not a model family, or none is given.
    """
    names = [v.strip() for v in str(text or "").split(",") if v.strip()]
    bad = [v for v in names if v not in FAMILIES]
    if bad or not names:
        raise ParameterError(f"candidates must be comma-separated model families ({', '.join(FAMILIES)}), "
                             f"got {str(text)[:60]!r}")
    return list(dict.fromkeys(names))


def cv_splits(labels: np.ndarray, folds: int, seed: int,
              groups: Optional[Sequence] = None) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], str]:
    """The cross-validation folds of a sample.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N,)`` class index of each sample.
    folds : int
        Requested folds; capped at the smallest class's sample count (stratified) or at the
        number of groups (grouped).
    seed : int
    groups : sequence, optional
        ``(N,)`` group (region) of each sample: whole groups per fold.

    Returns
    -------
    splits : list of (train positions, test positions)
        int64 arrays; every sample is tested exactly once.
    kind : str
        How the folds were made, in words.

    Raises
    ------
    ParameterError
        If fewer than 2 folds are possible.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    if groups is None:
        k = min(folds, int(np.bincount(labels).max()))
        if k < 2:
            raise ParameterError("cross-validation needs at least 2 samples in a class")
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = list(cv.split(np.zeros(len(labels)), labels))
        kind = f"{k} stratified folds (StratifiedKFold, seed {seed})"
    else:
        groups = np.asarray([str(g) for g in groups])
        k = min(folds, len(np.unique(groups)))
        if k < 2:
            raise ParameterError("cross-validation by regions needs at least 2 regions")
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = list(cv.split(np.zeros(len(labels)), labels, groups))
        kind = f"{k} folds of whole regions (StratifiedGroupKFold, seed {seed})"
    return [(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)) for a, b in splits], kind


def cross_validate(sample_set: SampleSet, out_dir: PathLike, candidates: Sequence[str] = ("forest", "boosting",
                                                                                          "ensemble"),
                   folds: int = 5, seed: int = 0, train: Optional[Mapping] = None, groups: Optional[Sequence] = None,
                   progress: Optional[ProgressCallback] = None) -> Dict:
    """Cross-validate model families on a sample and choose the best.

    Parameters
    ----------
    sample_set : SampleSet
        ``(bands, rows, cols)`` samples (patches or pixels).
    out_dir : path-like
        Receives ``cv.csv`` and ``cv.png``.
    candidates : sequence of str
        Model families (:data:`geoml_hub.models.FAMILIES`).
    folds : int
        See :func:`cv_splits`.
    seed : int
        Seed of the folds and of every model.
    train : mapping, optional
        :class:`~geoml_hub.training.TrainConfig` fields (``model`` is set per candidate).
    groups : sequence, optional
        Region of each sample: whole regions per fold.

    Returns
    -------
    dict
        ``folds`` (how they were made), ``candidates``: one row per family with
        ``fold_overall_accuracy`` (list), ``mean_overall_accuracy``, ``std_overall_accuracy``
        (population standard deviation over the folds), ``pooled_overall_accuracy`` (every
        sample's out-of-fold prediction), ``tpr`` (per class, pooled) and ``seconds``;
        ``chosen`` (the best mean, first listed on a tie), ``table`` and ``plot`` paths.

    Raises
    ------
    ParameterError
        If a candidate is unknown or the folds cannot be made.
    """
    candidates = parse_candidates(",".join(candidates))
    train = dict(train or {})
    train.pop("model", None)
    cfg = _replace(TrainConfig(), {**train, "seed": seed})
    cfg.check()
    labels = sample_set.labels()
    splits, kind = cv_splits(labels, folds, seed, groups)
    bands = _select_bands(sample_set, cfg.bands)
    report(progress, 0.0, f"cross-validating {', '.join(candidates)} on {len(labels)} samples: {kind}")
    x = sample_set.read()[:, [b - 1 for b in bands]]
    n_classes = len(sample_set.classes)
    trees = [c for c in candidates if c != "cnn"]
    feats = None
    if trees:
        feats = compute_features(x, tree_features(cfg, sample_set, bands))
    proba = {c: np.zeros((len(labels), n_classes), dtype=np.float32) for c in candidates}
    seconds = {c: 0.0 for c in candidates}
    fold_oa: Dict[str, List[float]] = {c: [] for c in candidates}
    rows = []
    steps = len(splits) * len(candidates)
    done = 0
    for f, (tr, te) in enumerate(splits):
        fold_proba: Dict[str, np.ndarray] = {}
        fold_seconds: Dict[str, float] = {}
        for cand in candidates:
            t0 = time.perf_counter()
            if cand == "cnn":
                p = _cnn_fold(sample_set, x, tr, te, train, seed, scaled(progress, done / steps, (done + 1) / steps))
            elif cand == "ensemble" and "forest" in fold_proba and "boosting" in fold_proba:
                p = (fold_proba["forest"] + fold_proba["boosting"]) / 2
            else:
                p = _tree_fold(cand, feats, labels, tr, te, n_classes, cfg.n_estimators, seed)
            took = time.perf_counter() - t0
            if cand == "ensemble" and "forest" in fold_seconds and "boosting" in fold_seconds:
                took += fold_seconds["forest"] + fold_seconds["boosting"]  # it reused their fits
            fold_proba[cand] = p
            fold_seconds[cand] = took
            proba[cand][te] = p
            oa = float((p.argmax(1) == labels[te]).mean())
            fold_oa[cand].append(oa)
            seconds[cand] += took
            rows.append({"model": cand, "fold": f + 1, "overall_accuracy": round(oa, 4), "n_train": int(len(tr)),
                         "n_test": int(len(te)), "seconds": round(took, 2)})
            done += 1
            report(progress, done / steps, f"fold {f + 1}/{len(splits)} {cand}: overall accuracy {oa:.3f}")
    out = Path(out_dir)
    table = []
    names = sample_set.class_names
    for cand in candidates:
        pred = proba[cand].argmax(1)
        tpr = {names[k]: (round(float((pred[labels == k] == k).mean()), 4) if (labels == k).any() else None)
               for k in range(n_classes)}
        table.append({"model": cand, "fold_overall_accuracy": [round(v, 4) for v in fold_oa[cand]],
                      "mean_overall_accuracy": round(float(np.mean(fold_oa[cand])), 4),
                      "std_overall_accuracy": round(float(np.std(fold_oa[cand])), 4),
                      "pooled_overall_accuracy": round(float((pred == labels).mean()), 4),
                      "tpr": tpr, "seconds": round(seconds[cand], 1)})
    best = max(table, key=lambda r: (r["mean_overall_accuracy"], -candidates.index(r["model"])))
    csv_path = write_csv(out / "cv.csv", CV_HEADER, ([r[k] for k in CV_HEADER] for r in rows))
    png_path = plot_cv(table, out / "cv.png", kind, best["model"])
    return {"folds": kind, "n_folds": len(splits), "n_samples": int(len(labels)), "candidates": table,
            "chosen": best["model"], "table": str(csv_path), "plot": str(png_path)}


def _tree_fold(family: str, feats: np.ndarray, labels: np.ndarray, tr: np.ndarray, te: np.ndarray, n_classes: int,
               n_estimators: int, seed: int) -> np.ndarray:
    """``(len(te), n_classes)`` probabilities of a tree family fitted on ``tr``."""
    with single_thread():
        est = make_estimator(family, n_estimators, seed).fit(feats[tr], labels[tr])
        out = np.zeros((len(te), n_classes), dtype=np.float32)
        out[:, np.asarray(est.classes_, dtype=np.int64)] = est.predict_proba(feats[te])
    return out


def _cnn_fold(sample_set: SampleSet, x: np.ndarray, tr: np.ndarray, te: np.ndarray, train: Dict, seed: int,
              progress: Optional[ProgressCallback]) -> np.ndarray:
    """``(len(te), n_classes)`` probabilities of a CNN trained on ``tr`` (in a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="geoml-cv-") as tmp:
        res = train_model(sample_set.subset(tr), Path(tmp) / "cv.pt", progress=progress,
                          **{**train, "model": "cnn", "seed": seed})
        model = load_model(res.model_path, device=res.device)
        return model.predict_proba(x[te])


def plot_cv(table: Sequence[Dict], path: PathLike, kind: str, chosen: str) -> Path:
    """Cross-validation overall accuracy per candidate as a PNG: mean ± standard deviation over
    the folds (error bars) and each fold (points); the chosen model in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * len(table) + 2.5, 3.6))
    for i, row in enumerate(table):
        folds = row["fold_overall_accuracy"]
        ax.errorbar([i], [row["mean_overall_accuracy"]], yerr=[row["std_overall_accuracy"]], fmt="o", capsize=6,
                    color="C0" if row["model"] != chosen else "C3", ms=8)
        ax.scatter(np.full(len(folds), i + 0.15), folds, s=12, color="0.5", zorder=3)
        ax.annotate(f"{row['mean_overall_accuracy']:.3f} ± {row['std_overall_accuracy']:.3f}",
                    (i, row["mean_overall_accuracy"]), textcoords="offset points", xytext=(10, 8), fontsize=8)
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels([r["model"] for r in table])
    for tick, row in zip(ax.get_xticklabels(), table):
        if row["model"] == chosen:
            tick.set_fontweight("bold")
    ax.set_xlim(-0.6, len(table) - 0.2)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("overall accuracy")
    ax.set_title(f"Model selection: {kind}\nchosen: {chosen} (grey: single folds)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)
