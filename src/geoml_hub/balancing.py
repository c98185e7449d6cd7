"""Training-sample balancing: the cluster-based algorithm of the ISDCT SB RAS Geoportal.

Source: A. Avramenko, A. Popova, R. Fedorov, "Cloud service of Geoportal ISDCT SB RAS
for machine learning", ITAMS 2021, section 3 ("Training sample balancing algorithm"):

1. form the list of ``(file name, sample index)`` pairs;
2. per sample compute the features: per band, the arithmetic mean and the standard
   deviation of its pixels;
3. cluster the feature vectors;
4. order the clusters by ascending number of elements;
5. from each cluster take every element if it has fewer elements than a threshold,
   otherwise every ``step``-th element.

"This approach guarantees that rare samples will definitely be included in the training
set, and frequent ones will be thinned out."

Choices where the paper is silent (all recorded in ``summary.json``):

* features are standardised (zero mean, unit variance) and clustered with scikit-learn's
  k-means (``n_init=10``, ``random_state=seed``), per class by default or over all
  samples (``per_class=False``; selection then still runs per class, on each class's
  members of each cluster);
* the elements of a thinned cluster are taken in list order (file, then index):
  positions ``0, step, 2*step, ...`` — ``ceil(size / step)`` elements;
* ``step`` is either given, or derived per class as the largest step that keeps at least
  ``target`` samples (``target`` defaults to the median class size: classes above it
  are thinned towards it, classes below it are kept whole);
* **no class is thinned below the size of the rarest class**: the effective step of a
  class is lowered until it keeps ``min(class size, rarest class size)`` samples. This
  guarantees that the ratio of the largest to the smallest class never grows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .errors import ParameterError
from .fileio import PathLike, save_figure, write_json
from .params import param, seed_param
from .progress import ProgressCallback, report, scaled
from .samples import Sample, SampleSet, read_container, write_manifest

ALGORITHM = "ISDCT Geoportal cluster-based balancing (Avramenko, Popova, Fedorov, ITAMS 2021)"
MAX_DEFAULT_CLUSTERS = 10
SAMPLES_PER_DEFAULT_CLUSTER = 5


def compute_features(sample_set: SampleSet, progress: Optional[ProgressCallback] = None) -> np.ndarray:
    """Per-band mean and standard deviation of every sample, computed file by file.

    Parameters
    ----------
    sample_set : SampleSet
        Samples of ``B`` bands.
    progress : callable, optional
        ``progress(fraction, message)`` after each file.

    Returns
    -------
    numpy.ndarray
        ``(N, 2 * B)`` float64: means of bands 1..B, then standard deviations (population,
        ``ddof=0``) of bands 1..B.

    Notes
    -----
    Samples of 8- and 16-bit integers (the usual case: Sentinel-2/Landsat digital numbers)
    are reduced on the stored integers: per sample and band the sum ``S`` and the sum of
    squares ``Q`` of its ``n`` pixels in ``uint64``/``int64`` (exact), then
    ``mean = S / n`` and ``std = sqrt(n Q - S**2) / n`` with ``n Q - S**2`` exact in
    ``int64`` (the variance's numerator; no cancellation), so the features equal the
    two-pass float64 ``mean``/``std`` to rounding (about 1e-16 relative). Squares are
    formed in ``uint32``/``int32`` blocks of a few samples that stay in the CPU cache.
    Other dtypes (floats, wider integers, very large patches) use the two-pass float64
    ``numpy.mean``/``numpy.std``.

    Memory is flat: one file (a ``.npy`` memory-mapped, read ``FEATURE_CHUNK`` samples
    at a time; a run of consecutive samples is a view of the map, not a copy) and a few
    cache-sized blocks are in memory at a time, beyond the ``(N, 2B)`` result.
    """
    n = len(sample_set)
    feats = np.empty((n, 2 * sample_set.bands), dtype=np.float64)
    files = list(sample_set.iter_files())
    for k, (path, positions) in enumerate(files):
        arr = read_container(path)
        idx = np.array([sample_set.samples[p].index for p in positions])
        pos = np.asarray(positions)
        order = np.argsort(idx, kind="stable")  # sequential reads of memory-mapped files
        idx, pos = idx[order], pos[order]
        for start in range(0, len(idx), FEATURE_CHUNK):
            sel = idx[start:start + FEATURE_CHUNK]
            if len(sel) and sel[-1] - sel[0] + 1 == len(sel) and np.all(np.diff(sel) == 1):
                chunk = arr[int(sel[0]):int(sel[-1]) + 1]  # a view: no copy
            else:
                chunk = arr[sel]
            feats[pos[start:start + FEATURE_CHUNK]] = _chunk_features(np.asarray(chunk))
        del arr
        report(progress, (k + 1) / len(files), f"features: file {k + 1}/{len(files)}")
    return feats


#: Samples read (memory-mapped) at a time by :func:`compute_features`.
FEATURE_CHUNK = 1024
#: Rows (sample-bands) squared and summed at a time: about 1 MiB of 16-bit pixels per block for 64×64 patches.
_BLOCK_ROWS = 128


def _chunk_features(chunk: np.ndarray) -> np.ndarray:
    """``(m, 2B)`` float64 per-band means and population standard deviations of ``chunk`` ``(m, B, ...)``."""
    m, bands = chunk.shape[:2]
    flat = chunk.reshape(m * bands, -1)
    npx = flat.shape[1]
    kind, size = flat.dtype.kind, flat.dtype.itemsize
    # exact integer path: n * Q - S**2 must fit in int64 (n**2 * max|x|**2 < 2**63)
    if kind in "ui" and size <= 2 and npx > 0 and npx * npx * float(1 << (16 * size)) < 2.0 ** 62:
        acc = np.uint64 if kind == "u" else np.int64
        sq_t = np.uint32 if kind == "u" else np.int32
        s = np.empty(m * bands, dtype=np.int64)
        q = np.empty(m * bands, dtype=np.int64)
        for r in range(0, m * bands, _BLOCK_ROWS):
            block = flat[r:r + _BLOCK_ROWS]
            s[r:r + _BLOCK_ROWS] = block.sum(axis=1, dtype=acc)
            q[r:r + _BLOCK_ROWS] = np.square(block, dtype=sq_t).sum(axis=1, dtype=acc)
        num = npx * q - s * s  # n^2 * variance, exact
        out = np.empty((m, 2 * bands), dtype=np.float64)
        out[:, :bands] = (s / npx).reshape(m, bands)
        out[:, bands:] = (np.sqrt(num.astype(np.float64)) / npx).reshape(m, bands)
        return out
    values = np.asarray(flat, dtype=np.float64).reshape(m, bands, -1)
    return np.concatenate([values.mean(axis=2), values.std(axis=2)], axis=1)


def cluster_features(features: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Standardise ``features`` ``(N, F)`` and cluster them with k-means.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 cluster labels in ``0 .. min(n_clusters, N) - 1``.
    """
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    k = max(1, min(int(n_clusters), len(features)))
    if k == 1:
        return np.zeros(len(features), dtype=np.int64)
    x = StandardScaler().fit_transform(features)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


def default_clusters(n: int) -> int:
    """Default number of clusters for ``n`` samples: about 5 samples a cluster, 1 to 10."""
    return max(1, min(MAX_DEFAULT_CLUSTERS, n // SAMPLES_PER_DEFAULT_CLUSTER))


def kept_count(sizes: List[int], threshold: int, step: int) -> int:
    """Samples kept from clusters of ``sizes``: whole below ``threshold``, else ``ceil(size/step)``."""
    return sum(s if s < threshold else math.ceil(s / step) for s in sizes)


def choose_step(sizes: List[int], threshold: int, minimum: int, step: Optional[int] = None) -> int:
    """The largest step (≤ ``step`` if given) that keeps at least ``minimum`` samples.

    ``kept_count`` does not increase with the step, so the search stops at the first
    step that keeps too few. Step 1 keeps everything, so a step always exists.
    """
    upper = max(sizes, default=1) if step is None else step
    best = 1
    for s in range(2, max(upper, 1) + 1):
        if kept_count(sizes, threshold, s) < minimum:
            break
        best = s
    return best


@dataclass
class BalanceResult:
    """Outcome of :func:`balance_samples`.

    Attributes
    ----------
    samples : SampleSet
        The input samples, with their cluster ids set.
    features : numpy.ndarray
        ``(N, 2 * bands)`` float64 features (means, then standard deviations).
    clusters : numpy.ndarray
        ``(N,)`` int64 cluster id of each sample (unique over the whole set).
    keep : numpy.ndarray
        ``(N,)`` bool, True for the samples selected.
    summary : dict
        What ``summary.json`` holds: parameters, per class and per cluster counts before
        and after, effective steps and thresholds.
    """

    samples: SampleSet
    features: np.ndarray
    clusters: np.ndarray
    keep: np.ndarray
    summary: dict

    def selected(self) -> SampleSet:
        """The selected samples, in algorithm order (class, then clusters by ascending size)."""
        order = self.summary["_order"]
        return self.samples.subset([i for i in order if self.keep[i]])

    def write(self, out_dir: PathLike, plot: bool = True) -> Dict[str, Path]:
        """Write ``manifest.csv``, ``summary.json`` and (if ``plot``) ``clusters.png`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"manifest": write_manifest(out / "manifest.csv", self.selected()),
                 "summary": write_json(out / "summary.json", public_summary(self.summary))}
        if plot:
            paths["plot"] = plot_clusters(self, out / "clusters.png")
        return paths


def public_summary(summary: dict) -> dict:
    """``summary`` without its private keys (those starting with ``_``)."""
    return {k: v for k, v in summary.items() if not k.startswith("_")}


#: Largest count the WPS accepts for threshold, step and target.
_MAX_COUNT = 10 ** 9


@dataclass(frozen=True)
class BalanceParams:
    """The parameters of :func:`balance_samples`, declared once (:mod:`geoml_hub.params`): the
    ``balance`` command's options, the ``balance_samples`` WPS inputs, the pipelines'
    pass-through and ``docs/parameters.md`` come from these fields.

    Attributes
    ----------
    threshold, step, target, n_clusters : int or None
        See :func:`balance_samples` (``None``: derived from the data).
    per_class : bool
        Cluster each class separately.
    seed : int
        Seed of k-means.
    """

    threshold: Optional[int] = param(
        None, "integer", "Threshold",
        "Clusters with fewer samples than this are kept whole. Default: per class, the target divided by the "
        "number of clusters (at least 2).", minimum=1, maximum=_MAX_COUNT, unit="samples")
    step: Optional[int] = param(
        None, "integer", "Step",
        "Keep every step-th sample of the larger clusters. Default: derived per class from the target. No class is "
        "thinned below the size of the rarest class.", minimum=1, maximum=_MAX_COUNT)
    target: Optional[int] = param(
        None, "integer", "Target",
        "Samples wanted per class when step is not given. Default: the median class size (classes above it are "
        "thinned towards it, the others are kept whole).", minimum=1, maximum=_MAX_COUNT, unit="samples")
    n_clusters: Optional[int] = param(
        None, "integer", "Clusters",
        "k-means clusters per class (or in all, with per_class false). Default: about 5 samples per cluster, 1 to "
        "10 per class.", minimum=1, maximum=1000, wps="clusters", cli="--clusters")
    per_class: bool = param(
        True, "boolean", "Cluster per class",
        "Cluster each class separately (true) or all samples together (false).",
        cli="--global-clusters", flag_help="cluster all samples together (per_class false)")
    seed: int = seed_param("k-means")


def balance_samples(sample_set: SampleSet, threshold: Optional[int] = None, step: Optional[int] = None,
                    target: Optional[int] = None, n_clusters: Optional[int] = None,
                    per_class: bool = BalanceParams.per_class, seed: int = BalanceParams.seed,
                    progress: Optional[ProgressCallback] = None) -> BalanceResult:
    """Balance a training sample with the ISDCT Geoportal cluster-based algorithm.

    Parameters
    ----------
    sample_set : SampleSet
        Samples from a tree or a manifest.
    threshold : int, optional
        Clusters with fewer elements are kept whole. Default: per class,
        ``ceil(target / number of clusters)`` (a cluster smaller than its fair share of
        the target is rare), at least 2.
    step : int, optional
        Take every ``step``-th element of larger clusters. Default: derived per class
        from ``target``.
    target : int, optional
        Samples wanted per class when ``step`` is not given. Default: the median class
        size; minimum: the size of the rarest class.
    n_clusters : int, optional
        Clusters per class (``per_class``) or in all. Default: about 5 samples per
        cluster, between 1 and 10 (per class), or 10 per class in all.
    per_class : bool
        Cluster each class separately (default) or all samples together.
    seed : int
        Seed of k-means: the same seed gives the same selection.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    BalanceResult

    Raises
    ------
    ParameterError
        If ``threshold``, ``step``, ``target`` or ``n_clusters`` is below 1.
    DataError
        If a container cannot be read.
    """
    for name, value in (("threshold", threshold), ("step", step), ("target", target), ("clusters", n_clusters)):
        if value is not None and int(value) < 1:
            raise ParameterError(f"{name} must be at least 1, got {value}")
    report(progress, 0.0, "balancing: computing features")
    feats = compute_features(sample_set, progress=scaled(progress, 0.0, 0.8))
    labels = np.array([s.class_name for s in sample_set.samples])
    names = sample_set.class_names
    counts = {n: int((labels == n).sum()) for n in names}
    present = [n for n in names if counts[n] > 0]
    rarest = min(counts[n] for n in present)
    median = int(np.ceil(np.median([counts[n] for n in present])))
    target_eff = median if target is None else max(int(target), rarest)

    clusters = np.full(len(sample_set), -1, dtype=np.int64)
    if per_class:
        next_id = 0
        for k, name in enumerate(present):
            members = np.flatnonzero(labels == name)
            k_c = default_clusters(len(members)) if n_clusters is None else int(n_clusters)
            clusters[members] = cluster_features(feats[members], k_c, seed) + next_id
            next_id = int(clusters[members].max()) + 1
            report(progress, 0.8 + 0.15 * (k + 1) / len(present), f"clustering class {name}")
    else:
        k_all = MAX_DEFAULT_CLUSTERS * len(present) if n_clusters is None else int(n_clusters)
        clusters = cluster_features(feats, k_all, seed)
        report(progress, 0.95, "clustering all samples")

    keep = np.zeros(len(sample_set), dtype=bool)
    order: List[int] = []
    per_class_summary: "OrderedDict[str, dict]" = OrderedDict()
    for name in present:
        members = np.flatnonzero(labels == name)
        groups = OrderedDict()
        for cid in np.unique(clusters[members]):
            groups[int(cid)] = members[clusters[members] == cid]
        # step 4: clusters by ascending number of elements (ties: by cluster id)
        ordered = sorted(groups.items(), key=lambda kv: (len(kv[1]), kv[0]))
        sizes = [len(m) for _, m in ordered]
        thr = int(threshold) if threshold is not None else max(2, math.ceil(target_eff / len(ordered)))
        minimum = min(counts[name], rarest)
        if step is not None:
            s_eff = choose_step(sizes, thr, minimum, int(step))
        else:
            s_eff = choose_step(sizes, thr, max(minimum, min(counts[name], target_eff)))
        cl_summary = []
        for cid, m in ordered:
            whole = len(m) < thr
            take = m if whole else m[::s_eff]
            keep[take] = True
            order.extend(int(i) for i in m)
            cl_summary.append({"cluster": cid, "before": int(len(m)), "after": int(len(take)),
                               "rule": "all (below threshold)" if whole else f"every {s_eff}th"})
        per_class_summary[name] = {
            "code": int(sample_set.classes[name]), "before": counts[name], "after": int(keep[members].sum()),
            "threshold": thr, "step": s_eff, "step_requested": step, "clusters": cl_summary}

    after = {n: per_class_summary[n]["after"] for n in present}
    summary = {
        "algorithm": ALGORITHM,
        "source": sample_set.source,
        "parameters": {"threshold": threshold, "step": step, "target": target, "target_effective": target_eff,
                       "clusters": n_clusters, "per_class": per_class, "seed": seed,
                       "features": "per-band mean and standard deviation, standardised", "clustering": "k-means"},
        "total_before": int(len(sample_set)),
        "total_after": int(keep.sum()),
        "ratio_before": max(counts[n] for n in present) / rarest,
        "ratio_after": max(after.values()) / min(after.values()),
        "classes": per_class_summary,
        "_order": order,
    }
    samples = [Sample(s.file, s.index, s.class_name, int(c)) for s, c in zip(sample_set.samples, clusters)]
    with_clusters = SampleSet(samples, sample_set.classes, sample_set.bands, sample_set.patch_size,
                              sample_set.source, sample_set.dtype, sample_set._counts)
    report(progress, 1.0, f"balanced: {summary['total_before']} -> {summary['total_after']} samples")
    return BalanceResult(with_clusters, feats, clusters, keep, summary)


def plot_clusters(result: BalanceResult, path: PathLike, max_points: int = 20000) -> Path:
    """Scatter the samples in the first two principal components of their standardised features.

    One panel per class (at most 12, else one panel for all); colour = cluster; filled
    markers are kept samples, grey crosses are thinned-out ones. At most ``max_points``
    samples are drawn (a seeded random subset).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    feats = result.features
    xy = (PCA(n_components=2, random_state=0).fit_transform(StandardScaler().fit_transform(feats))
          if len(feats) > 2 else np.zeros((len(feats), 2)))
    idx = np.arange(len(feats))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(0).choice(idx, max_points, replace=False))
    labels = np.array([s.class_name for s in result.samples.samples])
    names = [n for n in result.samples.class_names if (labels == n).any()]
    panels = names if len(names) <= 12 else ["all classes"]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, name in zip(axes.flat, panels):
        sel = idx if name == "all classes" else idx[labels[idx] == name]
        kept = sel[result.keep[sel]]
        dropped = sel[~result.keep[sel]]
        ax.scatter(xy[dropped, 0], xy[dropped, 1], marker="x", s=12, c="0.6", linewidths=0.8, label="thinned out")
        ax.scatter(xy[kept, 0], xy[kept, 1], s=18, c=[cmap(int(c) % 10) for c in result.clusters[kept]],
                   edgecolors="k", linewidths=0.3, label="kept")
        n_after = int(result.keep[labels == name].sum()) if name != "all classes" else int(result.keep.sum())
        n_before = int((labels == name).sum()) if name != "all classes" else len(labels)
        ax.set_title(f"{name}: {n_before} → {n_after}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle("Sample balancing: features (per-band mean, std) in PCA space, coloured by cluster", fontsize=10)
    fig.supxlabel("PC 1", fontsize=8)
    fig.supylabel("PC 2", fontsize=8)
    return save_figure(fig, path)
