"""Training of patch and pixel classifiers: a PyTorch CNN or scikit-learn trees.

``model`` chooses the family (:data:`geoml_hub.models.FAMILIES`). ``forest``, ``boosting``
and ``ensemble`` fit scikit-learn classifiers (:func:`make_estimator`) on the features of
:mod:`geoml_hub.features` — per-band statistics of patches or band values of pixels, plus
spectral indices where the band names are known — with the same seeded stratified
validation split (its overall accuracy is reported), then refit on all samples (seconds).
``cnn``: :func:`train_model` trains a :class:`~geoml_hub.models.PatchCNN`-family network on a
training-sample tree or manifest: a seeded, stratified split into training and
validation samples, per-band normalisation statistics from the training split only,
dihedral augmentation (flips, 90° rotations — overhead imagery has no "up"), AdamW with
a one-cycle learning-rate schedule, label smoothing, and early stopping on the validation
loss. With ``refit`` a fresh network is then trained on the training *and*
validation samples for the number of epochs the validation split chose — on a small
training sample the 15 % held for validation matter. CPU and CUDA run the same code.

Outputs: the model file (see :mod:`geoml_hub.models`), ``<model>.history.csv``
(per-epoch loss and overall accuracy, ``phase`` = ``select`` or ``refit``) and
``<model>.curves.png``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .compatibility import training_statistics
from .errors import DataError, ParameterError
from .fileio import PathLike, save_figure, write_csv
from .models import FAMILIES, build_network, manifest_hash, resolve_device, save_model
from .features import compute_features, feature_names, feature_spec, parse_band_names
from .params import device_param, param, seed_param
from .progress import ProgressCallback, report, scaled
from .samples import SampleSet, load_samples

HISTORY_HEADER = ("phase", "epoch", "train_loss", "train_overall_accuracy", "val_loss", "val_overall_accuracy",
                  "learning_rate", "seconds")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_model`; the defaults are the recommended settings.

    The user-facing ones (epochs, batch_size, learning_rate, val_fraction, patience, device,
    bands, augment, seed) are declared once here (:mod:`geoml_hub.params`): the ``train``
    command's options, the ``train_model`` WPS inputs and ``docs/parameters.md`` come from
    these fields; the others are internal.

    Chosen by 5-fold cross-validation on the 269 EuroSAT patches of ``../shared/data``
    (``docs/training.md``, ``benchmarks/accuracy.py``).

    Attributes
    ----------
    model : {'cnn', 'forest', 'boosting', 'ensemble'}
        Model family.
    n_estimators : int
        Trees of the forest; boosting iterations of the gradient-boosted trees.
    band_names : str, optional
        Comma-separated names of the samples' bands (spectral indices of tree families).
    indices : bool
        Tree families: add spectral indices where the band names are known.
    epochs : int
        Maximum epochs (one-cycle learning-rate schedule over this many).
    batch_size : int
    learning_rate : float
        Peak learning rate of AdamW.
    weight_decay : float
    val_fraction : float
        Share of each class held for validation and early stopping.
    patience : int
        Epochs without a lower validation loss before stopping.
    widths : tuple of int
        Channels of the convolution blocks.
    dropout : float
    band_statistics : bool
        Give the classifier the per-band mean and standard deviation of the input too
        (patches larger than 1 pixel).
    label_smoothing : float
    augment : bool
        Random flips and transposition (the 8 dihedral views).
    crop : int or None
        Train on random ``crop``×``crop`` windows of larger patches (pixels); the network
        is size-agnostic and predicts on whole patches.
    mixup : float
        Mixup Beta(α, α) parameter; 0 disables it.
    log_input : bool
        Feed ``log1p(reflectance)`` (band ratios become linear).
    refit : bool
        After early stopping, retrain on training + validation samples for the best
        epoch count.
    seed : int
    device : {'auto', 'cpu', 'cuda'}
    bands : tuple of int, optional
        1-based band subset (default: all bands).
    """

    model: str = param(
        "forest", "string", "Model family",
        "cnn: a PyTorch patch CNN (per-pixel network for 1x1 samples). forest: scikit-learn random forest, "
        "boosting: histogram gradient-boosted trees, ensemble: soft vote of the two, all three on per-band "
        "statistics of patches (mean, std, 10/50/90 % quantiles, texture, share of the brightness) or band values "
        "of pixels, plus spectral indices (NDVI, NDWI, MNDWI, NDBI, NBR) where the band names are known. Default: "
        "forest, the best in 5-fold cross-validation on EuroSAT (docs/training.md).", choices=FAMILIES,
        wps="family")  # the WPS process's "model" is its output file
    n_estimators: int = param(300, "integer", "Trees",
                              "forest: number of trees; boosting: boosting iterations; ensemble: both. Ignored by "
                              "cnn.", minimum=10, maximum=5000, unit="trees")
    band_names: Optional[str] = param(
        None, "string", "Band names",
        "Tree families: comma-separated names of the samples' bands, for spectral indices, e.g. "
        "B01,B02,B03,B04,B05,B06,B07,B08,B09,B10,B11,B12,B8A (names of the Sentinel-2 or Landsat 7 presets, or "
        "descriptions saying blue, green, red, NIR, SWIR 1, SWIR 2). Default: the band descriptions of GeoTIFF "
        "samples, else the preset of the band count (13: Sentinel-2 as EuroSAT orders it; 6 or 8: Landsat 7 ETM+ "
        "bands 1-5, 7 (, 6, QA)), else no indices.")
    indices: bool = param(True, "boolean", "Spectral indices",
                          "Tree families: add normalised-difference spectral indices where the band names are known.",
                          cli="--no-indices", flag_help="no spectral indices (indices false)")
    epochs: int = param(60, "integer", "Epochs",
                        "Maximum number of epochs (the one-cycle learning-rate schedule spans them; early stopping "
                        "may end training sooner).", minimum=1, maximum=500, unit="epochs")
    batch_size: int = param(32, "integer", "Batch size", "Samples per optimisation step.",
                            minimum=1, maximum=4096, unit="samples")
    learning_rate: float = param(3e-3, "float", "Learning rate", "Peak learning rate of AdamW.",
                                 minimum=1e-6, maximum=1.0)
    weight_decay: float = 5e-4
    val_fraction: float = param(0.15, "float", "Validation fraction",
                                "Share of each class held out for validation and early stopping; 0: no validation "
                                "(no early stopping, no validation accuracy).", minimum=0.0, maximum=0.9)
    patience: int = param(20, "integer", "Patience", "Epochs without a lower validation loss before training stops.",
                          minimum=1, maximum=500, unit="epochs")
    widths: Tuple[int, ...] = (32, 64, 128)
    dropout: float = 0.2
    band_statistics: bool = True
    label_smoothing: float = 0.1
    device: str = device_param()
    bands: Optional[Tuple[int, ...]] = param(
        None, "integers", "Bands",
        "Subset of the samples' bands to train on, 1-based and comma-separated, e.g. 2,3,4,8 (EuroSAT: B02, B03, "
        "B04, B08). Default: all bands.")
    augment: bool = param(True, "boolean", "Augment",
                          "Random flips and transpositions of the patches (the 8 dihedral views).",
                          cli="--no-augment", flag_help="no flips/rotations (augment false)")
    crop: Optional[int] = 48
    mixup: float = 0.0
    log_input: bool = False
    refit: bool = False
    seed: int = seed_param("the validation split, the weights and the augmentation")

    def check(self) -> None:
        """Raise :class:`ParameterError` for an out-of-range value."""
        if self.epochs < 1:
            raise ParameterError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ParameterError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.learning_rate <= 0:
            raise ParameterError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.patience < 1:
            raise ParameterError(f"patience must be at least 1, got {self.patience}")
        if not self.widths or min(self.widths) < 1:
            raise ParameterError(f"widths must be positive integers, got {self.widths}")
        if self.model not in FAMILIES:
            raise ParameterError(f"model must be one of {', '.join(FAMILIES)}, got {self.model!r}")
        if self.n_estimators < 1:
            raise ParameterError(f"n_estimators must be at least 1, got {self.n_estimators}")
        if isinstance(self.band_names, str):
            parse_band_names(self.band_names)


@dataclass
class TrainResult:
    """What :func:`train_model` produced."""

    model_path: Path
    history_path: Path
    curves_path: Path
    history: List[Dict[str, float]]
    best_epoch: int
    val_overall_accuracy: Optional[float]
    n_train: int
    n_val: int
    seconds: float
    device: str
    config: Dict = field(default_factory=dict)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split sample positions per class into ``(first, second)`` with ``fraction`` in the second.

    Each class with at least 2 samples puts ``max(1, round(fraction * n))`` samples in the
    second part (when ``fraction > 0``). Seeded: the same seed gives the same split.

    Returns
    -------
    tuple of numpy.ndarray
        Sorted int64 positions.
    """
    rng = np.random.default_rng(seed)
    first: List[int] = []
    second: List[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        k = 0 if fraction <= 0 or len(members) < 2 else min(len(members) - 1, max(1, round(fraction * len(members))))
        second.extend(members[:k])
        first.extend(members[k:])
    return np.sort(np.array(first, dtype=np.int64)), np.sort(np.array(second, dtype=np.int64))


def band_statistics(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over all pixels of ``x`` ``(N, bands, rows, cols)``.

    Returns float64 arrays ``(bands,)``; a zero standard deviation becomes 1.
    """
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    std[std == 0] = 1.0
    return mean, std


def augment_batch(xb, generator):
    """Random dihedral transform per sample (flips; 90° rotations for square patches)."""
    torch = __import__("torch")
    n = xb.shape[0]
    masks = torch.rand((3, n), generator=generator, device="cpu").lt(0.5).to(xb.device)
    xb = torch.where(masks[0].view(-1, 1, 1, 1), xb.flip(-1), xb)
    xb = torch.where(masks[1].view(-1, 1, 1, 1), xb.flip(-2), xb)
    if xb.shape[-1] == xb.shape[-2] and xb.shape[-1] > 1:
        xb = torch.where(masks[2].view(-1, 1, 1, 1), xb.transpose(-1, -2), xb)
    return xb


def _select_bands(sample_set: SampleSet, bands: Optional[Sequence[int]]) -> List[int]:
    if bands is None:
        return list(range(1, sample_set.bands + 1))
    bands = [int(b) for b in bands]
    bad = [b for b in bands if b < 1 or b > sample_set.bands]
    if bad or not bands:
        raise ParameterError(f"bands {bands}: each must be in 1..{sample_set.bands} (the samples' band count)")
    return bands


def train_model(samples: Union[SampleSet, PathLike], out: PathLike, config: Optional[TrainConfig] = None,
                progress: Optional[ProgressCallback] = None, **overrides) -> TrainResult:
    """Train a classifier and write the model file, its history CSV and curves PNG.

    Parameters
    ----------
    samples : SampleSet or path-like
        A training-sample tree, a ``manifest.csv``, or an opened sample set. Samples are
        ``(bands, rows, cols)``; rows = cols = 1 trains a pixel classifier.
    out : path-like
        The model file to write (``.pt`` by convention). ``<stem>.history.csv`` and
        ``<stem>.curves.png`` are written beside it.
    config : TrainConfig, optional
        Hyper-parameters; ``overrides`` (e.g. ``epochs=5``) replace single fields.
    progress : callable, optional
        ``progress(fraction, message)`` once per epoch.

    Returns
    -------
    TrainResult

    Raises
    ------
    DataError
        If the samples cannot be read or hold fewer than 2 classes.
    ParameterError
        If a hyper-parameter is out of range, a band index is outside the samples'
        bands, or ``device='cuda'`` without a GPU.
    """

    cfg = _replace(config or TrainConfig(), overrides)
    cfg.check()
    device = resolve_device(cfg.device)
    sample_set = samples if isinstance(samples, SampleSet) else load_samples(samples)
    labels = sample_set.labels()
    if len(np.unique(labels)) < 2:
        raise DataError(f"{sample_set.source}: training needs at least 2 classes with samples")
    bands = _select_bands(sample_set, cfg.bands)
    out = Path(out)
    started = time.perf_counter()
    report(progress, 0.0, f"reading {len(sample_set)} samples")
    if cfg.model != "cnn":
        return _train_trees(cfg, sample_set, labels, bands, out, started, progress)

    x_all = sample_set.read()[:, [b - 1 for b in bands]]
    tr, va = stratified_split(labels, cfg.val_fraction, cfg.seed)
    arch = {"name": "patch_cnn", "in_bands": len(bands), "n_classes": len(sample_set.classes),
            "patch_size": list(sample_set.patch_size), "widths": list(cfg.widths), "dropout": cfg.dropout,
            # on 1x1 pixel samples the band statistics are the input itself: no extra head
            "band_statistics": bool(cfg.band_statistics and min(sample_set.patch_size) > 1),
            "log_input": bool(cfg.log_input)}
    refit = cfg.refit and len(va) > 0
    phase1 = scaled(progress, 0.0, 0.5 if refit else 1.0)
    net, history, best_epoch = _fit(cfg, arch, x_all, labels, tr, va, device, cfg.epochs, phase1, "select")
    best_row = history[best_epoch - 1]
    used, mean, std = tr, net.norm.mean.flatten().tolist(), net.norm.std.flatten().tolist()
    if refit:
        # same schedule, all samples, stopped at the epoch the validation split chose
        used = np.sort(np.concatenate([tr, va]))
        net, refit_history, _ = _fit(cfg, arch, x_all, labels, used, va[:0], device, best_epoch,
                                     scaled(progress, 0.5, 1.0), "refit")
        mean, std = net.norm.mean.flatten().tolist(), net.norm.std.flatten().tolist()
        history += refit_history
    spectral = training_statistics(x_all, seed=cfg.seed, index=used)
    del x_all
    seconds = time.perf_counter() - started
    training = {"best_epoch": best_epoch, "epochs_run": len(history), "n_train": int(len(tr)), "n_val": int(len(va)),
                "refit_samples": int(len(used)) if refit else None,
                "val_overall_accuracy": None if not len(va) else best_row["val_overall_accuracy"],
                "device": device, "seconds": seconds, "source": sample_set.source}
    hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    save_model(out, net, architecture=arch, hyperparameters=hparams, class_names=sample_set.class_names,
               class_codes=list(sample_set.classes.values()), bands=bands, sample_bands=sample_set.bands,
               mean=mean, std=std, manifest_sha256=manifest_hash([sample_set.samples[i] for i in used]),
               training=training, spectral=spectral)
    stem = out.with_suffix("")
    history_path = write_csv(f"{stem}.history.csv", HISTORY_HEADER,
                             ([r[k] for k in HISTORY_HEADER] for r in history))
    curves_path = plot_history(history, f"{stem}.curves.png", best_epoch)
    return TrainResult(out, history_path, curves_path, history, best_epoch, training["val_overall_accuracy"],
                       int(len(tr)), int(len(va)), seconds, device, hparams)


def make_estimator(family: str, n_estimators: int = 300, seed: int = 0):
    """The unfitted scikit-learn classifier of a tree family.

    * ``forest``: ``RandomForestClassifier(n_estimators, max_features='sqrt')`` (Breiman 2001).
    * ``boosting``: ``HistGradientBoostingClassifier(max_iter=n_estimators, learning_rate=0.05,
      early_stopping=False)`` (LightGBM-style histogram boosting; Ke et al. 2017).
    * ``ensemble``: ``VotingClassifier`` of the two with ``voting='soft'`` (mean probabilities).

    All seeded with ``seed``; the forest uses every core (``n_jobs=-1``).

    Raises
    ------
    ParameterError
        If ``family`` is not a tree family.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, VotingClassifier

    forest = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=-1)
    boosting = HistGradientBoostingClassifier(max_iter=n_estimators, learning_rate=0.05, early_stopping=False,
                                              random_state=seed)
    if family == "forest":
        return forest
    if family == "boosting":
        return boosting
    if family == "ensemble":
        return VotingClassifier([("forest", forest), ("boosting", boosting)], voting="soft")
    raise ParameterError(f"{family!r} is not a tree family (forest, boosting, ensemble)")


def single_thread():
    """Context limiting OpenMP to one thread: scikit-learn's histogram boosting on a few hundred
    samples runs 25x slower with a thread per core when the cores are busy (1.2 s against 30 s for
    100 iterations on this 2-core machine at load 5, docs/training.md)."""
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    return threadpool_limits(limits=1, user_api="openmp")


def sample_descriptions(sample_set: SampleSet) -> Optional[List[Optional[str]]]:
    """Band descriptions of the first sample file when it is a GeoTIFF (``None`` otherwise or
    when it has none)."""
    first = Path(sample_set.samples[0].file) if len(sample_set) else None
    if first is None or first.suffix.lower() not in (".tif", ".tiff"):
        return None
    import rasterio  # imported here: only GeoTIFF samples need it

    with rasterio.open(first) as src:
        desc = list(src.descriptions)
    return desc if any(desc) else None


def tree_features(cfg: TrainConfig, sample_set: SampleSet, bands: Sequence[int]) -> Dict:
    """The feature description (:func:`geoml_hub.features.feature_spec`) of a tree model trained
    with ``cfg`` on ``sample_set``."""
    names = parse_band_names(cfg.band_names) if isinstance(cfg.band_names, str) else cfg.band_names
    return feature_spec(sample_set.bands, bands, sample_set.patch_size, names, sample_descriptions(sample_set),
                        cfg.indices)


def _train_trees(cfg: TrainConfig, sample_set: SampleSet, labels: np.ndarray, bands: List[int], out: Path,
                 started: float, progress: Optional[ProgressCallback]) -> TrainResult:
    """Fit a scikit-learn family: validation split → overall accuracy → refit on all samples."""
    x_all = sample_set.read()[:, [b - 1 for b in bands]]
    spec = tree_features(cfg, sample_set, bands)
    feats = compute_features(x_all, spec)
    mean, std = band_statistics(x_all)
    spectral = training_statistics(x_all, seed=cfg.seed)  # for the compatibility check, as the CNN's
    del x_all
    tr, va = stratified_split(labels, cfg.val_fraction, cfg.seed)
    t0 = time.perf_counter()
    row = {"phase": "select", "epoch": 1, "train_loss": float("nan"), "val_loss": float("nan"),
           "val_overall_accuracy": float("nan"), "learning_rate": float("nan")}
    val_oa = None
    if len(va):
        report(progress, 0.1, f"fitting {cfg.model} on {len(tr)} samples ({feats.shape[1]} features)")
        with single_thread():
            est = make_estimator(cfg.model, cfg.n_estimators, cfg.seed).fit(feats[tr], labels[tr])
            row["train_overall_accuracy"] = float((est.predict(feats[tr]) == labels[tr]).mean())
            val_oa = float((est.predict(feats[va]) == labels[va]).mean())
        row["val_overall_accuracy"] = val_oa
    report(progress, 0.5, f"fitting {cfg.model} on all {len(labels)} samples")
    with single_thread():
        est = make_estimator(cfg.model, cfg.n_estimators, cfg.seed).fit(feats, labels)
        if not len(va):
            row["train_overall_accuracy"] = float((est.predict(feats) == labels).mean())
    row["seconds"] = time.perf_counter() - t0
    history = [row]
    seconds = time.perf_counter() - started
    device = "cpu"
    training = {"best_epoch": 1, "epochs_run": 1, "n_train": int(len(tr)), "n_val": int(len(va)),
                "refit_samples": int(len(labels)), "val_overall_accuracy": val_oa, "device": device,
                "seconds": seconds, "source": sample_set.source, "n_features": int(feats.shape[1])}
    hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    arch = {"name": "sklearn", "estimator": type(est).__name__, "in_bands": len(bands),
            "n_classes": len(sample_set.classes), "patch_size": list(sample_set.patch_size)}
    save_model(out, None, architecture=arch, hyperparameters=hparams, class_names=sample_set.class_names,
               class_codes=list(sample_set.classes.values()), bands=bands, sample_bands=sample_set.bands,
               mean=mean.tolist(), std=std.tolist(), manifest_sha256=manifest_hash(sample_set.samples),
               training=training, family=cfg.model, estimator=est, features=spec, spectral=spectral)
    stem = out.with_suffix("")
    history_path = write_csv(f"{stem}.history.csv", HISTORY_HEADER, ([r[k] for k in HISTORY_HEADER] for r in history))
    curves_path = plot_importances(est, feature_names(spec, len(bands)), feats, labels, f"{stem}.curves.png",
                                   cfg.model, val_oa)
    report(progress, 1.0, f"{cfg.model} fitted" + (f", validation overall accuracy {val_oa:.3f}" if val_oa else ""))
    return TrainResult(out, history_path, curves_path, history, 1, val_oa, int(len(tr)), int(len(va)), seconds,
                       device, hparams)


def plot_importances(est, names: Sequence[str], feats: np.ndarray, labels: np.ndarray, path: PathLike,
                     family: str, val_oa: Optional[float]) -> Path:
    """The 20 most important features of a tree model as a bar chart PNG: the forest's mean
    decrease in impurity (``feature_importances_``; the forest member of an ensemble), else
    the features' ANOVA F statistic against the classes (``sklearn.feature_selection.f_classif``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    forest = est.named_estimators_["forest"] if hasattr(est, "named_estimators_") else est
    if hasattr(forest, "feature_importances_"):
        score, what = np.asarray(forest.feature_importances_), "forest: mean decrease in impurity"
    else:
        from sklearn.feature_selection import f_classif

        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.nan_to_num(f_classif(feats, labels)[0])
        what = "ANOVA F statistic"
    order = np.argsort(score)[::-1][:20][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(order) + 1.2))
    ax.barh([names[i] for i in order], score[order])
    ax.set_xlabel(what)
    title = f"{family}: most important features"
    if val_oa is not None:
        title += f" (validation overall accuracy {val_oa:.3f})"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def _fit(cfg: TrainConfig, arch: Dict, x_all: np.ndarray, labels: np.ndarray, tr: np.ndarray, va: np.ndarray,
         device: str, stop_epoch: int, progress: Optional[ProgressCallback], phase: str):
    """One training run: a fresh seeded network, normalised with the statistics of ``x_all[tr]``,
    trained under a one-cycle schedule of ``cfg.epochs`` epochs until ``stop_epoch`` or early
    stopping on ``va``. Returns ``(network with the best weights, history rows, best epoch)``."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    mean, std = band_statistics(np.log1p(np.maximum(x_all[tr], 0)) if arch.get("log_input") else x_all[tr])
    net = build_network(arch)
    net.norm.mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    net.norm.std.copy_(torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    net.to(device)
    x_tr = torch.from_numpy(x_all[tr]).to(device)
    y_tr = torch.from_numpy(labels[tr]).to(device)
    x_va = torch.from_numpy(x_all[va]).to(device)
    y_va = torch.from_numpy(labels[va]).to(device)

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(tr) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.learning_rate, epochs=cfg.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.15)
    history: List[Dict[str, float]] = []
    best = (math.inf, -1, None)
    since_best = 0
    for epoch in range(1, stop_epoch + 1):
        t0 = time.perf_counter()
        net.train()
        perm = torch.from_numpy(rng.permutation(len(tr))).to(device)
        loss_sum = correct = seen = 0.0
        for start in range(0, len(tr), cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            if len(idx) < 2 and len(tr) > 1:  # BatchNorm needs 2 samples: fold a lone last one into the epoch
                continue
            xb, yb = x_tr[idx], y_tr[idx]
            if cfg.augment:
                xb = augment_batch(xb, gen)
            if cfg.crop and cfg.crop < min(xb.shape[-2:]):
                r0, c0 = (int(v) for v in torch.randint(0, min(xb.shape[-2:]) - cfg.crop + 1, (2,), generator=gen))
                xb = xb[..., r0:r0 + cfg.crop, c0:c0 + cfg.crop]
            if cfg.mixup > 0:  # mixup (Zhang et al., ICLR 2018): convex combinations of sample pairs
                lam = float(torch.distributions.Beta(cfg.mixup, cfg.mixup).sample())
                pair = torch.randperm(len(xb), generator=gen).to(device)
                logits = net(lam * xb + (1 - lam) * xb[pair])
                loss = lam * F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing) + \
                    (1 - lam) * F.cross_entropy(logits, yb[pair], label_smoothing=cfg.label_smoothing)
            else:
                logits = net(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += float((logits.argmax(1) == yb).sum())
            seen += len(idx)
        row = {"phase": phase, "epoch": epoch, "train_loss": loss_sum / max(seen, 1),
               "train_overall_accuracy": correct / max(seen, 1), "val_loss": float("nan"),
               "val_overall_accuracy": float("nan"), "learning_rate": opt.param_groups[0]["lr"]}
        if len(va):
            row["val_loss"], row["val_overall_accuracy"] = _evaluate(net, x_va, y_va, cfg.batch_size * 4)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        monitor = row["val_loss"] if len(va) else -epoch  # without validation: the last epoch
        if monitor < best[0]:
            best = (monitor, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
            since_best = 0
        else:
            since_best += 1
        msg = (f"{phase} epoch {epoch}/{stop_epoch}: loss {row['train_loss']:.3f}"
               + (f", val overall accuracy {row['val_overall_accuracy']:.3f}" if len(va) else ""))
        report(progress, epoch / stop_epoch, msg)
        if len(va) and since_best >= cfg.patience:
            report(progress, 1.0, f"early stop at epoch {epoch}: best epoch {best[1]}")
            break
    net.load_state_dict(best[2])
    return net, history, best[1]


def _replace(cfg: TrainConfig, overrides: Dict) -> TrainConfig:
    data = asdict(cfg)
    unknown = set(overrides) - set(data)
    if unknown:
        raise ParameterError(f"unknown training parameter(s) {sorted(unknown)}")
    data.update({k: v for k, v in overrides.items()})
    return TrainConfig(**data)


def _evaluate(net, x, y, batch_size: int) -> Tuple[float, float]:
    import torch
    import torch.nn.functional as F

    net.eval()
    loss_sum = correct = 0.0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = net(x[start:start + batch_size])
            yb = y[start:start + batch_size]
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += float((logits.argmax(1) == yb).sum())
    return loss_sum / len(x), correct / len(x)


def plot_history(history: List[Dict[str, float]], path: PathLike, best_epoch: Optional[int] = None) -> Path:
    """Plot per-epoch loss and overall accuracy to a PNG: the selection run (training and
    validation) and, if present, the refit run on all samples (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for phase, style in (("select", "-"), ("refit", "--")):
        rows = [r for r in history if r.get("phase", "select") == phase]
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        label = "training" if phase == "select" else "refit on all samples"
        ax1.plot(epochs, [r["train_loss"] for r in rows], style, label=label)
        ax2.plot(epochs, [r["train_overall_accuracy"] for r in rows], style, label=label)
        if phase == "select" and not all(math.isnan(r["val_loss"]) for r in rows):
            ax1.plot(epochs, [r["val_loss"] for r in rows], style, label="validation")
            ax2.plot(epochs, [r["val_overall_accuracy"] for r in rows], style, label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy loss")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("overall accuracy")
    ax2.set_ylim(0, 1.02)
    for ax in (ax1, ax2):
        if best_epoch:
            ax.axvline(best_epoch, color="0.5", ls=":", lw=0.8, label=f"best epoch {best_epoch}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Training curves")
    return save_figure(fig, path)
