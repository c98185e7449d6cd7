"""Spectral compatibility of a model with a scene or a sample tree: is the model fit for it?

A model only knows the spectra it was trained on. Applied to a scene of another sensor,
scaling or season it still answers, often with high confidence and entirely wrong (a
EuroSAT model classified southern Irkutsk entirely as water). This module compares the
input, band by band, with the training data's statistics stored in the model file, and
says plainly whether the model is fit for it.

Training side (:func:`training_statistics`, called by :func:`geoml_hub.training.train_model`
and stored under the model file's ``spectral`` key): per band the model reads, in raw
units, the mean, standard deviation, minimum, maximum and the 101 percentiles (0 %, 1 %,
..., 100 %) of a seeded sample of at most :data:`TRAINING_SAMPLE` training pixels. Model
files written before this block fall back on the normalisation mean and standard
deviation (the range then is mean ± 2.576 σ, the 1 %/99 % points of a normal distribution;
with ``log_input`` the comparison is made on ``log1p`` values, as the network sees them).

Input side (:func:`check_compatibility`): the scene is streamed window by window (memory
bounded by one window), the mean and the share of pixels outside the training range are
exact over every valid pixel; a seeded random sample of at most ``sample_pixels`` valid
pixels gives the distribution distance, and a smaller sample (``confidence_samples``
pixels or patches) is classified by the model for the share of low-confidence predictions.
A sample tree is read sample by sample (all pixels of every patch).

Per band:

* ``mean_shift``: ``(input mean - training mean) / training std`` (standardised mean shift);
* ``outside``: share of the input's pixels outside the training [1 %, 99 %] range;
* ``distance``: the 1-Wasserstein (earth mover's) distance between the training and the
  input distributions, each given by its 101 percentiles (the input's from the sample),
  divided by the training std (SciPy's ``wasserstein_distance``; C. Villani, *Optimal
  Transport*, 2009; for 1-D distributions it is the area between the two quantile functions).

The model is *not compatible* when any band's ``|mean_shift|`` exceeds ``max_mean_shift``,
or its ``outside`` exceeds ``max_outside``, or its ``distance`` exceeds ``max_distance``,
or when the share of sample predictions whose class probability is below
``low_confidence`` exceeds ``max_low_confidence``. The thresholds are declared once
(:class:`CompatibilityParams`); ``docs/algorithms.md`` gives the figures measured on the real
data. The idea follows dataset-shift detection by univariate two-sample comparison of
features (S. Rabanser, S. Günnemann, Z. Lipton, "Failing Loudly: An Empirical Study of
Methods for Detecting Dataset Shift", NeurIPS 2019) and the out-of-distribution baseline of
the maximum softmax probability (D. Hendrycks, K. Gimpel, ICLR 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .bands import check_samples, resolve_band_map
from .errors import DataError, ParameterError
from .fileio import PathLike, save_figure, write_json
from .models import Model, load_model
from .params import device_param, param
from .progress import ProgressCallback, report, scaled
from .samples import SampleSet, load_samples
from .scene import GDAL_CACHE_MB, Scene

#: Training pixels (per band) the stored percentiles are computed from, at most.
TRAINING_SAMPLE = 200_000
#: Percentile levels stored in the model file (0 %, 1 %, ..., 100 %).
LEVELS = np.linspace(0.0, 1.0, 101)
#: z of the 1 % / 99 % points of a normal distribution (range of model files without percentiles).
Z99 = 2.576
SPECTRAL_VERSION = 1
#: Pixels sampled by the check that runs before a classification (:func:`quick_check`) ...
CHECK_PIXELS = 20_000
#: ... from at most this many 256 x 256 windows of the scene (aligned with 256-pixel GeoTIFF tiles).
CHECK_WINDOWS = 8


def training_statistics(x: np.ndarray, seed: int = 0, index: Optional[np.ndarray] = None,
                        chunk: int = 512) -> Dict:
    """Per-band statistics of training samples, stored in the model file (``spectral``).

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, bands, rows, cols)`` raw values (any numeric dtype) of the bands the model reads.
    seed : int
        Seed of the pixel sample the percentiles are computed from.
    index : numpy.ndarray, optional
        The samples of ``x`` to use (default: all); read ``chunk`` samples at a time, so no
        copy of the training set is made.
    chunk : int
        Samples per step.

    Returns
    -------
    dict
        ``version``, ``pixels`` (training pixels), ``mean``, ``std``, ``min``, ``max`` (lists, one
        value per band, raw units), ``levels`` (101 percentile levels in [0, 1]) and
        ``quantiles`` (``bands`` lists of 101 values; the 0 % and 100 % points are the exact
        minimum and maximum, the others from a seeded sample of at most :data:`TRAINING_SAMPLE`
        pixels). The mean and standard deviation are combined chunk by chunk (T. Chan, G. Golub,
        R. LeVeque, "Updating formulae and a pairwise algorithm for computing sample variances", 1979).

    Raises
    ------
    DataError
        If ``x`` holds no pixel.
    """
    if x.ndim != 4:
        raise DataError(f"training statistics need (N, bands, rows, cols) samples, got shape {x.shape}")
    index = np.arange(len(x)) if index is None else np.asarray(index)
    nb = x.shape[1]
    per_sample = int(x.shape[2] * x.shape[3])
    total = len(index) * per_sample
    if total == 0:
        raise DataError("training statistics need at least one pixel")
    rate = min(1.0, TRAINING_SAMPLE / total)
    rng = np.random.default_rng(seed)
    n = 0
    mean = np.zeros(nb)
    m2 = np.zeros(nb)
    low = np.full(nb, np.inf)
    high = np.full(nb, -np.inf)
    sample = []
    for start in range(0, len(index), chunk):
        flat = np.moveaxis(x[index[start:start + chunk]], 1, 0).reshape(nb, -1).astype(np.float64)
        k = flat.shape[1]
        cm = flat.mean(axis=1)
        delta = cm - mean
        m2 += ((flat - cm[:, None]) ** 2).sum(axis=1) + delta ** 2 * n * k / (n + k)
        mean += delta * k / (n + k)
        n += k
        low, high = np.minimum(low, flat.min(axis=1)), np.maximum(high, flat.max(axis=1))
        sample.append(flat[:, rng.random(k) < rate])
    quantiles = np.quantile(np.concatenate(sample, axis=1), LEVELS, axis=1).T
    quantiles[:, 0], quantiles[:, -1] = low, high  # the 0 % and 100 % points of all pixels, not of the sample
    return {"version": SPECTRAL_VERSION, "pixels": int(n), "mean": mean.tolist(), "std": np.sqrt(m2 / n).tolist(),
            "min": low.tolist(), "max": high.tolist(), "levels": LEVELS.tolist(), "quantiles": quantiles.tolist()}


@dataclass(frozen=True)
class CompatibilityParams:
    """The parameters of :func:`check_compatibility`, declared once (:mod:`geoml_hub.params`): the
    ``compatibility`` command's options, the ``check_compatibility`` WPS inputs and
    ``docs/parameters.md`` come from these fields.

    Attributes
    ----------
    band_map : tuple of int or None
        Scene band for each model band.
    max_mean_shift : float
        Largest allowed ``|scene mean - training mean|`` per band, in training standard deviations.
    max_outside : float
        Largest allowed share of pixels outside the training [1 %, 99 %] range, per band.
    max_distance : float
        Largest allowed Wasserstein distance per band, in training standard deviations.
    low_confidence : float
        Class probability below which a prediction is low-confidence.
    max_low_confidence : float
        Largest allowed share of low-confidence predictions.
    sample_pixels : int
        Valid pixels sampled for the distribution distance.
    confidence_samples : int
        Pixels (pixel models) or patches (patch models) classified for the confidence share.
    device : {'auto', 'cpu', 'cuda'}
    """

    band_map: Optional[tuple] = param(
        None, "integers", "Band map",
        "Scene band (1-based) for each band the model reads, comma-separated, e.g. 2,3,4; needed when the scene's "
        "bands differ from the training samples'.")
    max_mean_shift: float = param(
        3.0, "float", "Largest mean shift",
        "Not compatible when a band's scene mean lies more than this many training standard deviations from the "
        "training mean.", minimum=0.0, maximum=1000.0, unit="standard deviations")
    max_outside: float = param(
        0.25, "float", "Largest share outside the training range",
        "Not compatible when a band has more than this share of the scene's pixels outside the training [1 %, 99 %] "
        "range.", minimum=0.0, maximum=1.0)
    max_distance: float = param(
        1.0, "float", "Largest distribution distance",
        "Not compatible when a band's Wasserstein distance between the training and the scene distributions exceeds "
        "this many training standard deviations.", minimum=0.0, maximum=1000.0, unit="standard deviations")
    low_confidence: float = param(
        0.5, "float", "Low confidence",
        "A prediction whose class probability is below this is low-confidence.", minimum=0.0, maximum=1.0)
    max_low_confidence: float = param(
        1.0, "float", "Largest low-confidence share",
        "Not compatible when more than this share of the sampled predictions are low-confidence. The default, 1, "
        "only reports the share: a model that is unsure on its own training data (few epochs, many similar classes) "
        "is unsure everywhere, so the share alone does not tell a foreign scene.",
        minimum=0.0, maximum=1.0)
    sample_pixels: int = param(
        100_000, "integer", "Sampled pixels",
        "Valid scene pixels sampled (seeded) for the distribution distance; means and shares outside the range are "
        "exact over all pixels.", minimum=1000, maximum=10_000_000, unit="pixels")
    confidence_samples: int = param(
        500, "integer", "Classified samples",
        "Pixels (pixel models) or patches (patch models) of the scene classified for the low-confidence share.",
        minimum=10, maximum=100_000)
    device: str = device_param()


def model_statistics(model) -> Dict:
    """The training statistics of ``model``: its ``spectral`` block, or (older model files) one
    made from the normalisation mean and standard deviation.

    Returns
    -------
    dict
        ``mean``, ``std``, ``low``, ``high`` (the training [1 %, 99 %] range), ``quantiles``
        (``(bands, 101)`` array or ``None``), ``source`` (``'spectral'`` or ``'normalization'``) and
        ``log`` (True when the values are compared as ``log1p``, older files of ``log_input`` models).
    """
    meta = model.meta
    spec = meta.get("spectral")
    if spec and len(spec.get("mean", ())) == len(model.bands):
        q = np.asarray(spec["quantiles"], dtype=np.float64)
        levels = np.asarray(spec["levels"], dtype=np.float64)
        low = np.array([np.interp(0.01, levels, row) for row in q])
        high = np.array([np.interp(0.99, levels, row) for row in q])
        std = np.asarray(spec["std"], dtype=np.float64)
        return {"mean": np.asarray(spec["mean"], dtype=np.float64), "std": np.where(std > 0, std, 1.0),
                "low": low, "high": high, "quantiles": q, "source": "spectral", "log": False}
    norm = meta["normalization"]
    mean = np.asarray(norm["mean"], dtype=np.float64)
    std = np.asarray(norm["std"], dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return {"mean": mean, "std": std, "low": mean - Z99 * std, "high": mean + Z99 * std, "quantiles": None,
            "source": "normalization", "log": bool(meta.get("architecture", {}).get("log_input"))}


class NoValidPixels(DataError):
    """The input has no valid (non-nodata) pixel to compare."""


class _Accumulator:
    """Streaming per-band sums, outside-range counts and a seeded pixel sample."""

    def __init__(self, stats: Dict, rate: float, seed: int) -> None:
        nb = len(stats["mean"])
        self.stats, self.rate = stats, rate
        self.rng = np.random.default_rng(seed)
        self.n = 0
        self.total = np.zeros(nb)
        self.outside = np.zeros(nb, dtype=np.int64)
        self.samples: List[np.ndarray] = []
        self.windows: Optional[List[int]] = None  # scenes: [windows read, windows in the scene]

    def add(self, x: np.ndarray) -> None:
        """``x``: ``(bands, N)`` valid pixels (raw units)."""
        if x.shape[1] == 0:
            return
        x = np.log1p(np.maximum(x, 0)) if self.stats["log"] else x.astype(np.float64, copy=False)
        self.n += x.shape[1]
        self.total += x.sum(axis=1, dtype=np.float64)
        self.outside += ((x < self.stats["low"][:, None]) | (x > self.stats["high"][:, None])).sum(axis=1)
        pick = self.rng.random(x.shape[1]) < self.rate
        self.samples.append(x[:, pick])

    def figures(self) -> Dict:
        if self.n == 0:
            raise NoValidPixels("no valid pixel to compare with the training data (all nodata)")
        sample = np.concatenate(self.samples, axis=1)
        return {"n": self.n, "mean": self.total / self.n, "outside": self.outside / self.n, "sample": sample}


def _is_samples(source: Sequence[Path]) -> bool:
    return len(source) == 1 and (source[0].is_dir() or source[0].suffix.lower() == ".csv")


def check_compatibility(model, source: Union[PathLike, Sequence[PathLike]], out_dir: Optional[PathLike] = None,
                        band_map: Optional[Sequence[int]] = CompatibilityParams.band_map,
                        max_mean_shift: float = CompatibilityParams.max_mean_shift,
                        max_outside: float = CompatibilityParams.max_outside,
                        max_distance: float = CompatibilityParams.max_distance,
                        low_confidence: float = CompatibilityParams.low_confidence,
                        max_low_confidence: float = CompatibilityParams.max_low_confidence,
                        sample_pixels: int = CompatibilityParams.sample_pixels,
                        confidence_samples: int = CompatibilityParams.confidence_samples,
                        device: str = CompatibilityParams.device, seed: int = 0, window: int = 512,
                        max_windows: Optional[int] = None, progress: Optional[ProgressCallback] = None) -> Dict:
    """Compare a scene (or a sample tree) with the model's training data, band by band.

    Parameters
    ----------
    model : Model or path-like
    source : path-like, sequence of path-like or SampleSet
        Scene file(s) on one grid (bands in the order given), or one training-sample tree
        (directory) or ``manifest.csv``, or an opened sample set.
    out_dir : path-like, optional
        Where to write ``summary.json`` and ``compatibility.png`` (per-band training vs input
        distributions).
    band_map : sequence of int, optional
        1-based scene band for each model band (scenes only).
    max_mean_shift, max_outside, max_distance, low_confidence, max_low_confidence,
    sample_pixels, confidence_samples, device
        See :class:`CompatibilityParams`.
    seed : int
        Seed of the pixel and patch samples.
    window : int
        Edge of the windows a scene is read in.
    max_windows : int, optional
        Read only this many windows, drawn at random (seeded), instead of the whole scene: the
        means and shares are then estimates (:func:`quick_check`).
    progress : callable, optional

    Returns
    -------
    dict
        ``compatible`` (bool), ``reason`` (one sentence), ``bands`` (per model band: ``band``,
        ``scene_band``, ``training_mean``, ``training_std``, ``scene_mean``, ``mean_shift``,
        ``outside``, ``distance``, ``failed`` (list of failed checks)), ``low_confidence_share``,
        ``mean_confidence``, ``pixels`` (valid input pixels compared), ``windows`` (read / in the
        scene), ``thresholds``, ``statistics``
        (``spectral`` or ``normalization``), ``kind`` (``scene`` or ``samples``), ``figure``.

    Raises
    ------
    DataError, GridMismatchError
        If the input is missing, unreadable, or entirely nodata.
    ModelError
        If the input's bands do not fit the model.
    ParameterError
        If a threshold is out of range.
    """
    for name, value, hi in (("max_outside", max_outside, 1.0), ("low_confidence", low_confidence, 1.0),
                            ("max_low_confidence", max_low_confidence, 1.0),
                            ("max_mean_shift", max_mean_shift, np.inf), ("max_distance", max_distance, np.inf)):
        if not 0.0 <= value <= hi:
            raise ParameterError(f"{name} must be in 0..{hi}, got {value}")
    if sample_pixels < 1 or confidence_samples < 1:
        raise ParameterError("sample_pixels and confidence_samples must be at least 1")
    model = model if isinstance(model, Model) else load_model(model, device=device)
    if isinstance(source, SampleSet):
        paths = [Path(source.source)]
    else:
        paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
    stats = model_statistics(model)
    kind = "samples" if isinstance(source, SampleSet) or _is_samples(paths) else "scene"
    if kind == "samples":
        if band_map is not None:
            raise ParameterError("band_map applies to scenes; a sample tree is read with the model's own bands")
        sample_set = source if isinstance(source, SampleSet) else load_samples(paths[0])
        acc, conf, scene_bands = _samples_side(model, sample_set, stats, sample_pixels, confidence_samples, seed,
                                               progress)
    else:
        acc, conf, scene_bands = _scene_side(model, paths, stats, band_map, sample_pixels, confidence_samples, seed,
                                             window, max_windows, progress)
    fig = acc.figures()
    from scipy.stats import wasserstein_distance

    rows = []
    reasons = []
    for k, band in enumerate(model.bands):
        mean, std = stats["mean"][k], stats["std"][k]
        shift = float((fig["mean"][k] - mean) / std)
        distance = None
        if stats["quantiles"] is not None and fig["sample"].shape[1]:
            # both distributions by their 101 percentiles: the area between the quantile functions
            scene_q = np.quantile(fig["sample"][k], LEVELS)
            distance = float(wasserstein_distance(stats["quantiles"][k] / std, scene_q / std))
        outside = float(fig["outside"][k])
        failed = []
        if abs(shift) > max_mean_shift:
            failed.append("mean_shift")
        if outside > max_outside:
            failed.append("outside")
        if distance is not None and distance > max_distance:
            failed.append("distance")
        if failed:
            words = []
            if "mean_shift" in failed:
                words.append(f"scene mean is {abs(shift):.1f} σ {'above' if shift > 0 else 'below'} the training mean")
            if "outside" in failed:
                words.append(f"{100 * outside:.0f} % of pixels outside the training range")
            if "distance" in failed:
                words.append(f"distribution {distance:.1f} σ away from the training distribution")
            reasons.append((abs(shift) + 10 * outside, f"band {band}: " + "; ".join(words)))
        rows.append({"band": int(band), "scene_band": int(scene_bands[k]), "training_mean": float(mean),
                     "training_std": float(std), "training_low": float(stats["low"][k]),
                     "training_high": float(stats["high"][k]), "scene_mean": float(fig["mean"][k]),
                     "mean_shift": shift, "outside": outside, "distance": distance, "failed": failed})
    low_share = float((conf < low_confidence).mean()) if conf.size else None
    low_failed = low_share is not None and low_share > max_low_confidence
    what = "scene" if kind == "scene" else "samples"
    if reasons or low_failed:
        parts = [text for _, text in sorted(reasons, key=lambda t: -t[0])]
        if low_failed:
            parts.append(f"{100 * low_share:.0f} % of sampled predictions have a class probability below "
                         f"{low_confidence:g}")
        reason = f"not compatible: {'; '.join(parts)}"
    else:
        reason = (f"compatible: every band's {what} distribution lies within the training data's "
                  f"(largest mean shift {max(abs(r['mean_shift']) for r in rows):.1f} σ, largest share outside the "
                  f"training range {100 * max(r['outside'] for r in rows):.0f} %)")
    if stats["source"] == "normalization":
        reason += ("; the model file holds only the training mean and standard deviation (written before the "
                   "compatibility check), so the check is weaker: retrain to store the training distribution")
    summary = {"compatible": not (reasons or low_failed), "reason": reason, "kind": kind,
               "source": [str(p) for p in paths], "pixels": int(fig["n"]), "windows": acc.windows,
               "sampled_pixels": int(fig["sample"].shape[1]),
               "statistics": stats["source"], "log_values": stats["log"],
               "low_confidence_share": low_share, "mean_confidence": float(conf.mean()) if conf.size else None,
               "classified_samples": int(conf.size),
               "thresholds": {"max_mean_shift": max_mean_shift, "max_outside": max_outside,
                              "max_distance": max_distance, "low_confidence": low_confidence,
                              "max_low_confidence": max_low_confidence},
               "bands": rows, "figure": None}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary["figure"] = "compatibility.png"
        plot_compatibility(summary, stats, fig["sample"], out / "compatibility.png")
        write_json(out / "summary.json", summary)
    report(progress, 1.0, reason)
    return summary


def quick_check(model, scene: Union[Sequence[PathLike], PathLike],
                band_map: Optional[Sequence[int]] = None, progress: Optional[ProgressCallback] = None,
                device: str = "auto") -> Dict:
    """The compatibility check that runs before a classification: :func:`check_compatibility` with
    its default thresholds on :data:`CHECK_WINDOWS` windows of 256 x 256 pixels drawn at random
    (the whole scene when it is smaller), :data:`CHECK_PIXELS` sampled pixels and 200 classified
    samples: a fraction of a second, whatever the scene size.

    Returns
    -------
    dict
        The check's summary; ``{"compatible": None, "reason": "not checked: ..."}`` when the scene
        has no valid pixel (the classification then says so itself).

    Raises
    ------
    DataError, GridMismatchError, ModelError
        If the scene is missing or unreadable, or its bands do not fit the model.
    """
    try:
        return check_compatibility(model, scene, band_map=band_map, sample_pixels=CHECK_PIXELS,
                                   confidence_samples=200, device=device, window=256, max_windows=CHECK_WINDOWS,
                                   progress=progress)
    except NoValidPixels as exc:
        return {"compatible": None, "reason": f"not checked: {exc}"}


def _scene_side(model, paths, stats, band_map, sample_pixels, confidence_samples, seed, window, max_windows,
                progress):
    import rasterio

    rng = np.random.default_rng(seed + 1)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), Scene(paths) as sc:
        bands = resolve_band_map(model, sc.count, band_map, str(sc.paths[0]))
        tiles = list(sc.tiles(window))
        total_windows = len(tiles)
        if max_windows is not None and len(tiles) > max_windows:
            keep = np.sort(np.random.default_rng(seed + 2).choice(len(tiles), max_windows, replace=False))
            tiles = [tiles[i] for i in keep]
        covered = sum(h * w for _, _, h, w in tiles)
        acc = _Accumulator(stats, min(1.0, sample_pixels / covered), seed)
        acc.windows = [len(tiles), total_windows]
        stream = scaled(progress, 0.0, 0.8)
        conf_rate = min(1.0, 1.2 * confidence_samples / covered)
        picked = []  # raw pixels classified for the confidence share (pixel models)
        for k, (r, c, h, w) in enumerate(tiles):
            data, valid = sc.read(bands, r, c, h, w)
            pixels = data[:, valid]
            acc.add(pixels)
            if model.is_pixel_model:
                picked.append(pixels[:, rng.random(pixels.shape[1]) < conf_rate])
            report(stream, (k + 1) / len(tiles), f"compared window {k + 1}/{len(tiles)}")
        if acc.n == 0:
            raise NoValidPixels(f"{sc.paths[0]}: every pixel is nodata; nothing to compare with the training data")
        pr, pc = model.patch_size
        x = []
        if model.is_pixel_model:
            conf_pixels = np.concatenate(picked, axis=1)[:, :confidence_samples]
            x = [p[:, None, None] for p in conf_pixels.T]
        else:
            tries = 0
            while len(x) < confidence_samples and tries < confidence_samples * 4:
                r0, c0, h0, w0 = tiles[int(rng.integers(0, len(tiles)))]  # a window that was read
                r, c = r0 + int(rng.integers(0, h0)), c0 + int(rng.integers(0, w0))
                tries += 1
                d, v = sc.read(bands, r - pr // 2, c - pc // 2, pr, pc)
                if v[pr // 2, pc // 2]:
                    x.append(d)
        report(progress, 0.9, f"classifying {len(x)} sampled {'pixels' if model.is_pixel_model else 'patches'}")
        conf = (model.predict_proba(np.stack(x), batch_size=256).max(axis=1) if x
                else np.empty(0, dtype=np.float32))
    return acc, conf, bands


def _samples_side(model, sample_set, stats, sample_pixels, confidence_samples, seed, progress):
    check_samples(model, sample_set)
    band_idx = [b - 1 for b in model.bands]
    n = len(sample_set)
    pixels = n * int(np.prod(sample_set.patch_size))
    acc = _Accumulator(stats, min(1.0, sample_pixels / max(pixels, 1)), seed)
    pick = np.sort(np.random.default_rng(seed + 1).permutation(n)[:confidence_samples])
    conf = []
    stream = scaled(progress, 0.0, 0.9)
    batch = 64
    for start in range(0, n, batch):
        pos = np.arange(start, min(n, start + batch))
        x = sample_set.read(list(pos))[:, band_idx]
        acc.add(np.moveaxis(x, 1, 0).reshape(len(band_idx), -1))
        chosen = np.isin(pos, pick)
        if chosen.any():
            conf.append(model.predict_proba(x[chosen], batch_size=batch).max(axis=1))
        report(stream, (start + len(pos)) / n, f"compared samples {start + len(pos)}/{n}")
    return acc, np.concatenate(conf) if conf else np.empty(0, dtype=np.float32), list(model.bands)


def plot_compatibility(summary: Dict, stats: Dict, sample: np.ndarray, path: PathLike) -> Path:
    """Per-band cumulative distributions of the training data (percentiles, or a normal curve
    from the mean and std of older model files) and of the input sample, with the training
    [1 %, 99 %] range shaded; the verdict as the title. Written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["bands"]
    n = len(rows)
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows + 0.8), squeeze=False)
    for k, row in enumerate(rows):
        ax = axes[k // ncols][k % ncols]
        ax.axvspan(row["training_low"], row["training_high"], color="0.9", label="training 1-99 %")
        if stats["quantiles"] is not None:
            ax.plot(stats["quantiles"][k], LEVELS, color="tab:blue", label="training")
        else:
            from scipy.stats import norm

            xs = np.linspace(row["training_mean"] - 4 * row["training_std"], row["training_mean"] + 4 * row["training_std"], 200)
            ax.plot(xs, norm.cdf(xs, row["training_mean"], row["training_std"]), color="tab:blue", label="training (normal)")
        if sample.shape[1]:
            values = np.sort(sample[k])
            ax.plot(values, np.linspace(0, 1, len(values)), color="tab:red" if row["failed"] else "tab:green",
                    label=summary["kind"])
        # the bulk of both distributions (a few extreme training pixels would squeeze the curves)
        lo, hi = row["training_low"], row["training_high"]
        if sample.shape[1]:
            lo, hi = min(lo, float(np.quantile(sample[k], 0.005))), max(hi, float(np.quantile(sample[k], 0.995)))
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        ax.set_xlim(lo - pad, hi + pad)
        flag = " ✗" if row["failed"] else ""
        dist = f", distance {row['distance']:.1f} σ" if row["distance"] is not None else ""
        ax.set_title(f"band {row['band']} (input {row['scene_band']}){flag}\nshift {row['mean_shift']:.1f} σ, "
                     f"outside {100 * row['outside']:.0f} %{dist}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(0, 1)
        if k == 0:
            ax.legend(fontsize=6, loc="lower right")
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    title = "compatible" if summary["compatible"] else "NOT compatible"
    fig.suptitle(f"{title} — cumulative distributions{' (log1p)' if stats['log'] else ''}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
