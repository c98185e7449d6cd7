"""Quality control of classifications with PyCM.

The method of the ISDCT SB RAS Geoportal (Avramenko et al., ITAMS 2021, section 3): a
classification raster is compared with a labelled reference raster *only where the
reference is labelled*; PyCM computes the statistics, with overall accuracy (ACC) and
PPV as the main criteria, and two versions of a method are compared on one reference.

The confusion matrix is accumulated window by window with NumPy (``bincount`` of
``reference × span + predicted``) and handed to PyCM as a matrix. PyCM's own
vector input fills the matrix in a Python loop (35 s and 4.6 GB at 10⁸ pixels).

Terms: *reference* = ground truth (rows of the matrix), *predicted* = classification
(columns); PPV = precision = user's accuracy; TPR = recall = producer's accuracy.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .classification import as_model, class_names_from_raster, predict_samples
from .errors import DataError, ParameterError
from .fileio import PathLike, save_figure, write_csv, write_json
from .params import device_param, tta_param
from .progress import ProgressCallback, report, scaled
from .scene import GDAL_CACHE_MB, _open, check_same_grid

ROW_BLOCK = 1024  # rows per window; bounded memory whatever the raster width


def gdal_env():
    """GDAL settings for windowed reading: a 64 MB block cache (memory flat in raster size) and
    block decoding on all cores (``GDAL_NUM_THREADS``: compressed tiles of one window in parallel)."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_NUM_THREADS="ALL_CPUS")


def _clean(value) -> Optional[float]:
    """PyCM reports undefined values as the string 'None'; JSON gets null."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def accumulate_pairs(reference: np.ndarray, predicted: np.ndarray, counts: Counter) -> None:
    """Add the ``(reference, predicted)`` value pairs of two equal-shape integer arrays to ``counts``.

    Uses one ``numpy.bincount`` over the local value ranges; falls back to ``numpy.unique``
    for sparse, very wide ranges.
    """
    if reference.size == 0:
        return
    r = reference.astype(np.int64, copy=False)
    p = predicted.astype(np.int64, copy=False)
    rmin, rmax, pmin, pmax = int(r.min()), int(r.max()), int(p.min()), int(p.max())
    rspan, pspan = rmax - rmin + 1, pmax - pmin + 1
    if rspan * pspan <= 4_000_000:
        key = (r - rmin) * pspan + (p - pmin)
        binc = np.bincount(key.ravel(), minlength=rspan * pspan)
        for k in np.flatnonzero(binc):
            counts[(int(k // pspan) + rmin, int(k % pspan) + pmin)] += int(binc[k])
    else:
        pairs, n = np.unique(np.stack([r.ravel(), p.ravel()]), axis=1, return_counts=True)
        for (a, b), m in zip(pairs.T, n):
            counts[(int(a), int(b))] += int(m)


def _as_labels(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{name}: labels must be whole numbers (found non-integer values among labelled pixels)")
    return arr.astype(np.int64, copy=False)


@dataclass
class PixelCounts:
    """Confusion counts of a classification against a reference raster."""

    pairs: Counter  # (reference code, predicted code) -> pixels
    unclassified: int  # labelled pixels whose classification is nodata
    labelled: int  # labelled reference pixels


def confusion_counts(classification: PathLike, reference: PathLike, reference_nodata: Optional[float] = 0,
                     ignore_crs_name: bool = False, progress: Optional[ProgressCallback] = None,
                     rows: Optional[Tuple[int, int]] = None) -> PixelCounts:
    """Count ``(reference, predicted)`` code pairs over the labelled pixels, window by window.

    Parameters
    ----------
    classification, reference : path-like
        Single-band rasters on one grid (shape, transform, CRS).
    reference_nodata : float, optional
        The reference's "unlabelled" value (0 by default; may be a float such as
        -99999). ``None``: every pixel is labelled except the file's own nodata.
    ignore_crs_name : bool
        Accept CRSs that are the same projection under different names.
    rows : (int, int), optional
        Count only rows ``start..stop-1`` (one block of a fan-out, :func:`count_block`).

    Raises
    ------
    GridMismatchError
        If the grids differ; the message says which of shape, transform or CRS.
    DataError
        If a file is missing or unreadable, has more than one band, or labels are not whole numbers.
    """
    from rasterio.windows import Window


    with gdal_env(), _open(classification) as cls_src, _open(reference) as ref_src:
        for src, what in ((cls_src, f"classification {classification}"), (ref_src, f"reference {reference}")):
            if src.count != 1:
                raise DataError(f"{what}: has {src.count} bands; a single-band raster of class codes is expected")
        check_same_grid(cls_src, ref_src, f"classification {classification}", f"reference {reference}", ignore_crs_name)
        unlabelled = reference_nodata if reference_nodata is not None else ref_src.nodata
        cls_nodata = cls_src.nodata
        h, w = ref_src.height, ref_src.width
        first, last = rows if rows is not None else (0, h)
        windows = [Window(0, r, w, min(ROW_BLOCK, last - r)) for r in range(first, last, ROW_BLOCK)]
        if ref_src.dtypes[0] in _BYTE_TYPES and cls_src.dtypes[0] in _BYTE_TYPES:
            return _byte_counts(ref_src, cls_src, windows, unlabelled, cls_nodata, progress)
        counts: Counter = Counter()
        unclassified = labelled = 0
        for k, (win, ref, pred) in enumerate(_read_pairs(ref_src, cls_src, windows)):
            mask = np.ones(ref.shape, dtype=bool)
            if unlabelled is not None:
                mask &= ~np.isnan(ref) if (isinstance(unlabelled, float) and math.isnan(unlabelled)) else ref != unlabelled
            if ref.dtype.kind == "f":
                mask &= ~np.isnan(ref)
            ref_l, pred_l = ref[mask], pred[mask]
            labelled += ref_l.size
            if cls_nodata is not None:
                ok = pred_l != cls_nodata
                unclassified += int((~ok).sum())
                ref_l, pred_l = ref_l[ok], pred_l[ok]
            accumulate_pairs(_as_labels(ref_l, str(reference)), _as_labels(pred_l, str(classification)), counts)
            report(progress, (k + 1) / len(windows), f"compared rows {win.row_off + win.height}/{h}")
    return PixelCounts(counts, unclassified, labelled)


_BYTE_TYPES = ("uint8", "int8")


def _read_pairs(ref_src, cls_src, windows):
    """Yield ``(window, reference, classification)`` arrays, reading the next window in a
    background thread while the caller counts the current one (GDAL releases the GIL).
    Only the reader thread touches the datasets."""
    def read(win):
        return ref_src.read(1, window=win), cls_src.read(1, window=win)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoml-qc-read") as pool:
        pending = pool.submit(read, windows[0]) if windows else None
        for k, win in enumerate(windows):
            ref, pred = pending.result()
            if k + 1 < len(windows):
                pending = pool.submit(read, windows[k + 1])
            yield win, ref, pred


def _byte_counts(ref_src, cls_src, windows, unlabelled, cls_nodata, progress) -> PixelCounts:
    """8-bit reference and classification: one ``bincount`` of ``ref << 8 | pred`` per window.

    Windows are read one ahead in a background thread, and each window's two halves are
    counted on two threads. No masking or copying per window: the full 256×256 table is
    accumulated, then the unlabelled row is dropped and the classification-nodata column
    becomes the ``unclassified`` count.
    """
    r_off = 128 if ref_src.dtypes[0] == "int8" else 0
    p_off = 128 if cls_src.dtypes[0] == "int8" else 0

    table = np.zeros(256 * 256, dtype=np.int64)
    count = lambda part: np.bincount(part, minlength=256 * 256)  # noqa: E731
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="geoml-qc-count") as pool:
        for k, (win, ref, pred) in enumerate(_read_pairs(ref_src, cls_src, windows)):
            key = (ref.astype(np.int16) + r_off).astype(np.uint16) if r_off else ref.astype(np.uint16)  # 0..255
            key <<= 8
            key |= (pred.astype(np.int16) + p_off).astype(np.uint16) if p_off else pred
            key = key.ravel()
            half = key.size // 2  # bincount releases the GIL: count the two halves on two cores
            for part in pool.map(count, (key[:half], key[half:])):
                table += part
            report(progress, (k + 1) / len(windows), f"compared rows {win.row_off + win.height}/{ref_src.height}")
    table = table.reshape(256, 256)
    if unlabelled is not None and float(unlabelled).is_integer() and -r_off <= unlabelled < 256 - r_off:
        table[int(unlabelled) + r_off, :] = 0
    unclassified = 0
    if cls_nodata is not None and float(cls_nodata).is_integer() and -p_off <= cls_nodata < 256 - p_off:
        column = int(cls_nodata) + p_off
        unclassified = int(table[:, column].sum())
        table[:, column] = 0
    counts: Counter = Counter()
    for i, j in zip(*np.nonzero(table)):
        counts[(int(i) - r_off, int(j) - p_off)] = int(table[i, j])
    return PixelCounts(counts, unclassified, int(table.sum()) + unclassified)


def build_confusion_matrix(pairs: Mapping[Tuple, int], names: Optional[Mapping] = None):
    """A ``pycm.ConfusionMatrix`` from ``(reference, predicted) → count`` pairs.

    Parameters
    ----------
    pairs : mapping
        Keys are ``(reference, predicted)`` class codes (or names), values pixel counts.
    names : mapping, optional
        Code → class name; codes without a name are shown as their number.

    Returns
    -------
    tuple
        ``(pycm.ConfusionMatrix, classes)`` where ``classes`` is the ordered list of
        ``(code, name)`` over the union of reference and predicted codes.

    Raises
    ------
    DataError
        If there are no pairs (no labelled pixel was compared), only one class, or PyCM refuses
        the matrix.
    """
    from pycm import ConfusionMatrix

    try:
        from pycm.errors import pycmMatrixError, pycmVectorError
    except ImportError:  # pycm < 4.1
        from pycm.pycm_error import pycmMatrixError, pycmVectorError

    if not pairs or sum(pairs.values()) == 0:
        raise DataError("no labelled pixel to compare (is the reference nodata value right?)")
    names = dict(names or {})
    codes = sorted({k for pair in pairs for k in pair}, key=lambda v: (isinstance(v, str), v))
    label = {c: str(names.get(c, c)) for c in codes}
    if len(set(label.values())) != len(label):  # two codes with one name: keep them apart
        label = {c: f"{label[c]} ({c})" for c in codes}
    matrix = {label[a]: {label[b]: int(pairs.get((a, b), 0)) for b in codes} for a in codes}
    classes = [(c, label[c]) for c in codes]
    if len(classes) < 2:
        raise DataError(f"only one class ({classes[0][1]}) among the compared pixels; PyCM needs at least 2 classes "
                        "in the reference or the classification")
    try:
        cm = ConfusionMatrix(matrix=matrix, classes=[n for _, n in classes])
    except (pycmMatrixError, pycmVectorError) as exc:
        raise DataError(f"PyCM cannot build the confusion matrix: {exc}") from None
    return cm, classes  # ordered by code


def qc_summary(cm, classes: Sequence[Tuple], extra: Optional[Dict] = None) -> Dict:
    """The ``summary.json`` content for a PyCM matrix: headline figures and per-class PPV/TPR/F1."""
    names = [n for _, n in classes]
    out = {
        "overall_accuracy": _clean(cm.Overall_ACC),
        "kappa": _clean(cm.Kappa),
        "ppv": {n: _clean(cm.PPV[n]) for n in names},
        "tpr": {n: _clean(cm.TPR[n]) for n in names},
        "f1": {n: _clean(cm.F1[n]) for n in names},
        "n": int(sum(sum(row.values()) for row in cm.table.values())),
        "classes": names,
        "codes": {n: c for c, n in classes},
        "reference_counts": {n: int(sum(cm.table[n].values())) for n in names},
        "predicted_counts": {n: int(sum(cm.table[m][n] for m in names)) for n in names},
        "confusion_matrix": {"rows": "reference", "columns": "predicted",
                             "matrix": [[int(cm.table[a][b]) for b in names] for a in names]},
        "macro_ppv": _clean(np.mean([v for v in (_clean(cm.PPV[n]) for n in names) if v is not None] or [np.nan])),
    }
    out.update(extra or {})
    return out


def html_safe(cm):
    """``cm`` with HTML-escaped class names, for PyCM's ``report.html``.

    PyCM writes class names into its HTML as they are; a name comes from user data (a raster's
    ``CLASS_NAMES`` tag, a sample folder), so ``<img src=x onerror=...>`` would become markup.
    The counts, and so every statistic, are those of ``cm``.
    """
    from pycm import ConfusionMatrix

    names = list(cm.classes)
    escaped = {n: html.escape(str(n)) for n in names}
    if all(escaped[n] == n for n in names):
        return cm
    matrix = {escaped[a]: {escaped[b]: int(cm.table[a][b]) for b in names} for a in names}
    return ConfusionMatrix(matrix=matrix, classes=[escaped[n] for n in names])


def write_reports(cm, classes: Sequence[Tuple], summary: Dict, out_dir: PathLike,
                  title: str = "Confusion matrix") -> Dict[str, Path]:
    """Write ``summary.json``, PyCM's ``report.html``, ``report.csv`` and ``report.obj`` (PyCM's object
    file, loadable with ``pycm.ConfusionMatrix(file=open(path))``), and ``confusion_matrix.png``.

    Each file appears atomically (PyCM writes into a temporary directory first). Class names
    are HTML-escaped in ``report.html`` (:func:`html_safe`) and kept as they are elsewhere.
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".pycm-") as tmp:
        res_h = html_safe(cm).save_html(os.path.join(tmp, "report"), summary=False)
        res_c = cm.save_csv(os.path.join(tmp, "report"), matrix_save=True)
        res_o = cm.save_obj(os.path.join(tmp, "report"))  # PyCM's own format: ConfusionMatrix(file=...)
        for res in (res_h, res_c, res_o):
            if not res.get("Status"):
                raise DataError(f"{out}: PyCM could not write its report ({res.get('Message')})")
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), out / name)
            paths[name] = out / name
    ax = cm.plot(number_label=True, cmap=matplotlib.colormaps["Blues"], title=title, plot_lib="matplotlib")
    fig = ax.get_figure()
    fig.set_size_inches(max(5, 0.7 * len(classes) + 3), max(4, 0.6 * len(classes) + 2.5))
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for label in ax.get_xticklabels():  # long class names (HerbaceousVegetation) must not overlap
        label.set(rotation=45, ha="right", rotation_mode="anchor")
    paths["heatmap"] = save_figure(fig, out / "confusion_matrix.png")
    paths["summary"] = write_json(out / "summary.json", summary)
    return paths


#: Confidence bins of the reliability table: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
CONFIDENCE_BINS = 10


def confidence_bins(classification: PathLike, reference: PathLike, confidence: PathLike,
                    reference_nodata: Optional[float] = 0, ignore_crs_name: bool = False,
                    bins: int = CONFIDENCE_BINS) -> Dict:
    """Accuracy of a classification per confidence bin on the labelled reference pixels: how
    reliable the confidence is (a reliability diagram; C. Guo et al., "On Calibration of Modern
    Neural Networks", ICML 2017).

    Parameters
    ----------
    classification, reference : path-like
        Single-band rasters on one grid (as for :func:`validate_classification`).
    confidence : path-like
        Single-band float32 confidence raster on the same grid (probability of the predicted
        class in [0, 1], written by ``classify_scene(confidence=...)``); its nodata pixels are
        left out.
    reference_nodata : float, optional
        The unlabelled value of the reference.
    bins : int
        Equal-width bins over [0, 1] (the last includes 1).

    Returns
    -------
    dict
        ``bins``: list of ``{low, high, n, correct, accuracy, mean_confidence}`` (``accuracy`` and
        ``mean_confidence`` null for an empty bin); ``n``; ``mean_confidence_correct`` and
        ``mean_confidence_wrong`` (mean confidence of correctly and wrongly classified pixels);
        ``ece``, the expected calibration error ``sum_b n_b / n * |accuracy_b - confidence_b|``.

    Raises
    ------
    GridMismatchError, DataError
        If a raster is missing, unreadable, off-grid or not single-band.
    """
    from rasterio.windows import Window

    n = np.zeros(bins, dtype=np.int64)
    correct = np.zeros(bins, dtype=np.int64)
    conf_sum = np.zeros(bins)
    sums = {True: [0.0, 0], False: [0.0, 0]}
    with gdal_env(), _open(classification) as cls_src, _open(reference) as ref_src, _open(confidence) as conf_src:
        for src, what in ((conf_src, f"confidence raster {confidence}"),):
            if src.count != 1:
                raise DataError(f"{what}: has {src.count} bands; a single-band confidence raster is expected")
        check_same_grid(cls_src, ref_src, f"classification {classification}", f"reference {reference}", ignore_crs_name)
        check_same_grid(conf_src, ref_src, f"confidence raster {confidence}", f"reference {reference}", ignore_crs_name)
        unlabelled = reference_nodata if reference_nodata is not None else ref_src.nodata
        h, w = ref_src.height, ref_src.width
        for r in range(0, h, ROW_BLOCK):
            win = Window(0, r, w, min(ROW_BLOCK, h - r))
            ref = ref_src.read(1, window=win)
            pred = cls_src.read(1, window=win)
            conf = conf_src.read(1, window=win).astype(np.float64)
            mask = np.isfinite(conf) & (conf >= 0) & (conf <= 1)
            if conf_src.nodata is not None:
                mask &= conf != conf_src.nodata
            if unlabelled is not None and not (isinstance(unlabelled, float) and math.isnan(unlabelled)):
                mask &= ref != unlabelled
            if ref.dtype.kind == "f":
                mask &= ~np.isnan(ref)
            if cls_src.nodata is not None:
                mask &= pred != cls_src.nodata
            ok = ref[mask] == pred[mask]
            c = conf[mask]
            k = np.minimum((c * bins).astype(np.int64), bins - 1)
            n += np.bincount(k, minlength=bins)
            correct += np.bincount(k[ok], minlength=bins)
            conf_sum += np.bincount(k, weights=c, minlength=bins)
            for flag in (True, False):
                sums[flag][0] += float(c[ok == flag].sum())
                sums[flag][1] += int((ok == flag).sum())
    total = int(n.sum())
    rows = []
    ece = 0.0
    for b in range(bins):
        acc = float(correct[b] / n[b]) if n[b] else None
        mc = float(conf_sum[b] / n[b]) if n[b] else None
        if n[b]:
            ece += n[b] / total * abs(acc - mc)
        rows.append({"low": b / bins, "high": (b + 1) / bins, "n": int(n[b]), "correct": int(correct[b]),
                     "accuracy": acc, "mean_confidence": mc})
    mean = lambda flag: sums[flag][0] / sums[flag][1] if sums[flag][1] else None  # noqa: E731
    return {"bins": rows, "n": total, "ece": ece if total else None, "mean_confidence_correct": mean(True),
            "mean_confidence_wrong": mean(False), "confidence": str(confidence)}


def plot_reliability(table: Dict, path: PathLike) -> Path:
    """Reliability diagram of :func:`confidence_bins`: accuracy per confidence bin (bars, with
    the pixel count) against the diagonal of a perfectly calibrated model; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axn) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    rows = table["bins"]
    width = rows[0]["high"] - rows[0]["low"]
    centres = [(r["low"] + r["high"]) / 2 for r in rows]
    ax.bar(centres, [r["accuracy"] or 0.0 for r in rows], width=width * 0.9, color="tab:blue", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy of the bin's pixels")
    ece = table["ece"]
    ax.set_title(f"Accuracy by confidence (n = {table['n']}" + (f", ECE {ece:.3f})" if ece is not None else ")"))
    ax.legend(fontsize=8, loc="upper left")
    axn.bar(centres, [r["n"] for r in rows], width=width * 0.9, color="0.5")
    axn.set_ylabel("pixels")
    axn.set_xlabel("confidence (probability of the predicted class)")
    axn.set_xlim(0, 1)
    fig.tight_layout()
    return save_figure(fig, path)


def validate_classification(classification: PathLike, reference: PathLike, out_dir: Optional[PathLike] = None,
                            reference_nodata: Optional[float] = 0, class_names: Optional[Mapping[int, str]] = None,
                            ignore_crs_name: bool = False, confidence: Optional[PathLike] = None, workers: int = 1,
                            progress: Optional[ProgressCallback] = None) -> Dict:
    """PyCM quality control of a classification raster on the labelled reference pixels.

    Parameters
    ----------
    classification : path-like
        Single-band classification GeoTIFF (class codes; its nodata pixels are counted
        as ``unclassified`` and left out of the matrix).
    reference : path-like
        Single-band reference (ground truth) raster on the same grid.
    out_dir : path-like, optional
        Where to write ``summary.json``, ``report.html``, ``report.csv``,
        ``report_matrix.csv`` and ``confusion_matrix.png``.
    reference_nodata : float, optional
        The unlabelled value of the reference (default 0).
    class_names : mapping, optional
        Code → name; default: the classification's ``CLASS_NAMES`` tag.
    ignore_crs_name : bool
        Accept CRSs that differ only in name.
    confidence : path-like, optional
        The classification's confidence raster: adds ``confidence_bins``
        (:func:`confidence_bins`) to the summary and ``reliability.png`` to ``out_dir``.
    workers : int
        Worker processes: with more than 1 the rows are counted in blocks
        (:func:`plan_qc`, :func:`count_block`) and the per-block matrices summed
        (:func:`fuse_counts`), as iota2 fuses per-tile matrices; the result is the same.

    Returns
    -------
    dict
        The summary: ``overall_accuracy``, ``kappa``, ``ppv``, ``tpr``, ``f1`` (per class
        name), ``n``, ``classes`` and more.

    Raises
    ------
    GridMismatchError, DataError
    """

    if workers < 1:
        raise ParameterError(f"workers must be at least 1, got {workers}")
    if workers > 1:
        from .blocks import run_local  # the fan-out runner: only with worker processes

        with tempfile.TemporaryDirectory(prefix="geoml-qc-blocks-") as tmp:
            task = plan_qc(classification, reference, tmp, workers, reference_nodata, ignore_crs_name)
            run_local(task, workers, progress, message="compared")
            counts = fuse_counts(task)
    else:
        counts = confusion_counts(classification, reference, reference_nodata, ignore_crs_name, progress)
    return qc_report(counts, classification, reference, out_dir, reference_nodata, class_names, confidence,
                     ignore_crs_name)


def qc_report(counts: PixelCounts, classification: PathLike, reference: PathLike, out_dir: Optional[PathLike] = None,
              reference_nodata: Optional[float] = 0, class_names: Optional[Mapping[int, str]] = None,
              confidence: Optional[PathLike] = None, ignore_crs_name: bool = False) -> Dict:
    """The PyCM summary (and, with ``out_dir``, the reports) of confusion counts, as
    :func:`validate_classification` writes them (with ``confidence``: its reliability bins too)."""
    names = dict(class_names) if class_names else class_names_from_raster(classification)
    cm, classes = build_confusion_matrix(counts.pairs, names)
    summary = qc_summary(cm, classes, {"labelled": counts.labelled, "unclassified": counts.unclassified,
                                       "classification": str(classification), "reference": str(reference),
                                       "reference_nodata": reference_nodata})
    if confidence is not None:
        summary["confidence_bins"] = confidence_bins(classification, reference, confidence, reference_nodata,
                                                     ignore_crs_name)
    if out_dir is not None:
        if confidence is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            plot_reliability(summary["confidence_bins"], Path(out_dir) / "reliability.png")
        write_reports(cm, classes, summary, out_dir, title="Confusion matrix (pixels)")
    return summary


QC_ALIGN = 64  # rows: block boundaries of a QC fan-out (counting is additive: any split is exact)


def plan_qc(classification: PathLike, reference: PathLike, block_dir: PathLike, blocks: int,
            reference_nodata: Optional[float] = 0, ignore_crs_name: bool = False) -> Path:
    """Check a QC and write its block task (:func:`geoml_hub.blocks.write_task`): at most
    ``blocks`` row-blocks, each counted by :func:`count_block`.

    Returns
    -------
    Path
        The task file ``block_dir/task.json``.

    Raises
    ------
    GridMismatchError, DataError
        As :func:`confusion_counts`, before anything is written.
    """
    from .blocks import BlockPlan, write_task  # geoml_hub.blocks imports this module by name

    with gdal_env(), _open(classification) as cls_src, _open(reference) as ref_src:
        for src, what in ((cls_src, f"classification {classification}"), (ref_src, f"reference {reference}")):
            if src.count != 1:
                raise DataError(f"{what}: has {src.count} bands; a single-band raster of class codes is expected")
        check_same_grid(cls_src, ref_src, f"classification {classification}", f"reference {reference}", ignore_crs_name)
        plan = BlockPlan.split(ref_src.height, ref_src.width, QC_ALIGN, blocks)
    args = {"classification": str(Path(classification).resolve()), "reference": str(Path(reference).resolve()),
            "reference_nodata": reference_nodata, "ignore_crs_name": bool(ignore_crs_name)}
    return write_task(block_dir, "qc", plan, args)


def count_block(args: Dict, plan, index: int, out_dir: PathLike,
                progress: Optional[ProgressCallback] = None) -> Dict:
    """Confusion counts of block ``index`` of a QC plan (:func:`plan_qc`).

    Returns
    -------
    dict
        ``rows`` ``[start, stop]``, ``pairs`` (``[reference, predicted, pixels]`` triples),
        ``unclassified`` and ``labelled`` (pixels); :func:`fuse_counts` sums them.
    """
    start, stop = plan.block(index)
    counts = confusion_counts(args["classification"], args["reference"], args["reference_nodata"],
                              args["ignore_crs_name"], progress, rows=(start, stop))
    return {"rows": [start, stop], "pairs": [[_plain(r), _plain(p), int(n)] for (r, p), n in counts.pairs.items()],
            "unclassified": int(counts.unclassified), "labelled": int(counts.labelled)}


def _plain(v):
    """A class code as JSON keeps it (int, float or str)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def fuse_counts(task: PathLike) -> PixelCounts:
    """Sum the per-block confusion counts of a QC task (the per-block matrices add up to the
    scene's: each labelled pixel is in exactly one block).

    Raises
    ------
    ParameterError
        If a block has no result.
    """
    from .blocks import block_results, read_task  # geoml_hub.blocks imports this module by name

    task = Path(task)
    _, plan, _ = read_task(task)
    pairs: Counter = Counter()
    unclassified = labelled = 0
    for r in block_results(task.parent, plan.n):
        for ref, pred, n in r["pairs"]:
            pairs[(ref, pred)] += n
        unclassified += r["unclassified"]
        labelled += r["labelled"]
    return PixelCounts(pairs, unclassified, labelled)


@dataclass(frozen=True)
class EvaluateParams:
    """The parameters of :func:`evaluate_model`, declared once (:mod:`geoml_hub.params`): the
    ``evaluate`` command's options, the ``evaluate_model`` WPS inputs and
    ``docs/parameters.md`` come from these fields.

    Attributes
    ----------
    device : {'auto', 'cpu', 'cuda'}
    tta : bool
        Test-time augmentation of patch models.
    """

    device: str = device_param()
    tta: bool = tta_param()


def evaluate_model(model, samples, out_dir: Optional[PathLike] = None, device: str = EvaluateParams.device,
                   tta: bool = EvaluateParams.tta, progress: Optional[ProgressCallback] = None) -> Dict:
    """Patch-level QC: predict a tree or manifest and compare with the samples' classes.

    Writes the same files as :func:`validate_classification` plus ``predictions.csv``.

    Returns
    -------
    dict
        The summary (``overall_accuracy``, ``kappa``, ``ppv``, ``tpr``, ``f1``, ``n``,
        ``classes``, ...).
    """

    model = as_model(model, device)
    out = Path(out_dir) if out_dir is not None else None
    result = predict_samples(model, samples, out / "predictions.csv" if out else None, device=device, tta=tta,
                             progress=progress)
    pairs: Counter = Counter(zip(result["reference"], result["predicted"]))
    code_of = dict(zip(model.class_names, model.class_codes))
    key = lambda name: code_of.get(name, name)  # a class the model does not know stays a name, listed last
    cm, classes = build_confusion_matrix({(key(a), key(b)): n for (a, b), n in pairs.items()},
                                         {c: n for n, c in code_of.items()})
    summary = qc_summary(cm, classes, {"samples": str(getattr(samples, "source", samples)), "tta": tta})
    if out is not None:
        write_reports(cm, classes, summary, out, title="Confusion matrix (patches)")
    return summary


def compare_classifications(classification_a: PathLike, classification_b: PathLike, reference: PathLike,
                            out_dir: Optional[PathLike] = None, names: Tuple[str, str] = ("A", "B"),
                            reference_nodata: Optional[float] = 0, ignore_crs_name: bool = False,
                            progress: Optional[ProgressCallback] = None) -> Dict:
    """Compare two classifications (two versions of a method) against one reference.

    Each is validated with :func:`validate_classification` (reports in ``out_dir/<name>/``);
    ``comparison.csv`` holds ACC, Kappa, macro PPV and per-class PPV side by side, and
    ``summary.json`` names the better version: higher overall accuracy, ties broken by
    kappa (the paper's criteria are ACC and PPV). PyCM's own ``Compare`` verdict is
    included as ``pycm_best`` when it reaches one.

    Raises
    ------
    ParameterError
        If the two names are equal.
    """

    if names[0] == names[1]:
        raise ParameterError(f"the two classifications need different names, got {names}")
    out = Path(out_dir) if out_dir is not None else None
    results = {}
    for k, (name, path) in enumerate(zip(names, (classification_a, classification_b))):
        results[name] = validate_classification(path, reference, out / name if out else None, reference_nodata,
                                                ignore_crs_name=ignore_crs_name,
                                                progress=scaled(progress, k / 2, (k + 1) / 2))
    a, b = (results[n] for n in names)
    key = lambda s: (s["overall_accuracy"] or 0.0, s["kappa"] if s["kappa"] is not None else -1.0)
    better = names[0] if key(a) >= key(b) else names[1]
    if key(a) == key(b):
        better = None
    classes = list(dict.fromkeys(a["classes"] + b["classes"]))
    rows: List[List] = [["overall_accuracy", a["overall_accuracy"], b["overall_accuracy"]],
                        ["kappa", a["kappa"], b["kappa"]],
                        ["macro_ppv", a["macro_ppv"], b["macro_ppv"]]]
    rows += [[f"ppv:{c}", a["ppv"].get(c), b["ppv"].get(c)] for c in classes]
    rows += [[f"tpr:{c}", a["tpr"].get(c), b["tpr"].get(c)] for c in classes]
    summary = {"names": list(names), "better": better,
               "rule": "higher overall accuracy, then higher kappa",
               "pycm_best": _pycm_best(results),
               "table": {r[0]: {names[0]: r[1], names[1]: r[2]} for r in rows},
               "classifications": {names[0]: str(classification_a), names[1]: str(classification_b)},
               "reference": str(reference)}
    if out is not None:
        write_csv(out / "comparison.csv", ["statistic", names[0], names[1]], rows)
        write_json(out / "summary.json", summary)
    return summary


def _pycm_best(results: Mapping[str, Dict]) -> Optional[str]:
    """PyCM ``Compare``'s choice between the matrices of two summaries (None when it names none).

    ``Compare`` needs both matrices over the same classes; otherwise there is no verdict.
    """
    from pycm import Compare, ConfusionMatrix
    try:
        from pycm.errors import pycmCompareError
    except ImportError:  # pycm < 4.1
        from pycm.pycm_error import pycmCompareError

    cms = {}
    for name, s in results.items():
        m = s["confusion_matrix"]["matrix"]
        cms[name] = ConfusionMatrix(matrix={a: {b: m[i][j] for j, b in enumerate(s["classes"])}
                                            for i, a in enumerate(s["classes"])})
    try:
        return Compare(cms).best_name
    except pycmCompareError:
        return None
