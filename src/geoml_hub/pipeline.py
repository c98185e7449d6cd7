"""End-to-end pipelines: patch trees and labelled scenes.

* :func:`run_patch_pipeline` — split a training-sample tree (stratified, seeded) into a
  training part and a held-out test part, balance the training part, choose the model
  family by cross-validation on the balanced selection (stratified folds), train it on
  the whole selection, and run patch-level QC on the held-out part.
* :func:`run_scene_pipeline` — split the labelled regions of a reference raster
  spatially (whole regions to one side, as iota2 does), extract training samples from
  the training regions, balance, choose the model family by cross-validation with whole
  regions per fold, train, classify the scene, and validate the classification on the
  test regions only.

Model selection (:mod:`geoml_hub.selection`) writes ``selection/cv.csv`` and
``selection/cv.png``; its table is ``selection`` in ``summary.json``.

Each step writes into its own sub-directory of ``out``; ``summary.json`` at the top
gathers the headline figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from .balancing import BalanceParams, balance_samples, public_summary
from .classification import classify_scene
from .errors import DataError, ParameterError
from .extraction import extract_samples, split_regions
from .fileio import PathLike, write_json
from .params import check_values, names
from .progress import ProgressCallback, report, scaled
from .samples import load_samples, write_manifest
from .scene import Scene, _open, check_readable, check_same_grid
from .selection import SelectParams, cross_validate, parse_candidates
from .training import TrainConfig, _replace, stratified_split, train_model
from .validation import evaluate_model, validate_classification


def _balance_kwargs(balance: Optional[Mapping]) -> Dict:
    """The declared balancing parameters of ``balance`` (:class:`~geoml_hub.balancing.BalanceParams`)
    that are set; other keys are left out."""
    allowed = set(names(BalanceParams))
    return {k: v for k, v in dict(balance or {}).items() if k in allowed and v is not None}


def check_parameters(test_fraction: float, seed: int, balance: Optional[Mapping], train: Optional[Mapping],
                     cli: bool = False, select: Optional[Mapping] = None) -> None:
    """Check the pipeline's parameters before anything is written: the test fraction, and the
    balancing, training and model-selection parameters against their declarations and the
    core's own checks.

    ``cli``: name the command-line options in messages (else the parameters' names).

    Raises
    ------
    ParameterError
    """
    if not 0 < test_fraction < 1:
        raise ParameterError(f"{'--test-fraction' if cli else 'test fraction'} must be between 0 and 1 "
                             f"(both excluded), got {test_fraction}")
    check_values(BalanceParams, {"seed": seed, **dict(balance or {})}, cli=cli)
    check_values(TrainConfig, {"seed": seed, **dict(train or {})}, cli=cli)
    _replace(TrainConfig(), {"seed": seed, **dict(train or {})}).check()
    select = _select_kwargs(select)
    check_values(SelectParams, select, cli=cli)
    parse_candidates(select["candidates"])


def _select_kwargs(select: Optional[Mapping]) -> Dict:
    """The declared model-selection parameters (:class:`~geoml_hub.selection.SelectParams`),
    defaults filled in."""
    allowed = set(names(SelectParams))
    given = {k: v for k, v in dict(select or {}).items() if k in allowed and v is not None}
    return {"candidates": SelectParams.candidates, "cv_folds": SelectParams.cv_folds, **given}


def check_scene_inputs(scene: Sequence[PathLike], reference: PathLike, patch_size: int = 1) -> None:
    """Check a scene pipeline's rasters before anything is written: every file opens, the scene's
    files share one grid, the reference is one band on the scene's grid, and every block of the
    scene and the reference can be read (a truncated or corrupt file fails here).

    Raises
    ------
    DataError, GridMismatchError, ParameterError
    """
    if patch_size < 1 or patch_size % 2 == 0:
        raise ParameterError(f"patch size must be a positive odd number of pixels, got {patch_size}")
    with Scene(scene) as sc, _open(reference) as ref:
        if ref.count != 1:
            raise DataError(f"reference {reference}: has {ref.count} bands; a single-band label raster is expected")
        check_same_grid(sc.dataset, ref, f"scene {sc.paths[0]}", f"reference {reference}")
    check_readable(list(scene) + [reference])


def _balance_and_train(sample_set, out: Path, seed: int, balance: Optional[Mapping], train: Optional[Mapping],
                       progress: Optional[ProgressCallback], start: float, mid: float, stop: float,
                       select: Optional[Mapping] = None, by_region: bool = False):
    """Balance ``sample_set`` into ``out/balance``, choose the model family by cross-validation
    on the selection (``out/selection``; whole regions — sample containers — per fold when
    ``by_region``) and train the chosen family on the whole selection into ``out/model/model.pt``.

    Returns the :class:`~geoml_hub.training.TrainResult` and the ``balance``/``selection``/
    ``training`` parts of the pipeline summary.
    """
    bal = balance_samples(sample_set, progress=scaled(progress, start, mid), **{"seed": seed, **_balance_kwargs(balance)})
    bal.write(out / "balance")
    selected = bal.selected()
    select = _select_kwargs(select)
    groups = [str(s.file) for s in selected.samples] if by_region else None
    cv_stop = mid + 0.5 * (stop - mid)
    cv = cross_validate(selected, out / "selection", parse_candidates(select["candidates"]), select["cv_folds"],
                        seed, train, groups, progress=scaled(progress, mid, cv_stop))
    cfg = {"seed": seed, **dict(train or {}), "model": cv["chosen"]}
    result = train_model(selected, out / "model" / "model.pt", progress=scaled(progress, cv_stop, stop), **cfg)
    summary = public_summary(bal.summary)
    steps = {"balance": {k: summary[k] for k in ("total_before", "total_after", "ratio_before", "ratio_after")},
             "selection": cv,
             "training": {"model": cv["chosen"], "epochs_run": len(result.history), "best_epoch": result.best_epoch,
                          "val_overall_accuracy": result.val_overall_accuracy, "seconds": round(result.seconds, 1),
                          "device": result.device}}
    return result, steps


def run_patch_pipeline(samples: PathLike, out: PathLike, test_fraction: float = 0.2, seed: int = 0,
                       balance: Optional[Mapping] = None, train: Optional[Mapping] = None,
                       progress: Optional[ProgressCallback] = None, select: Optional[Mapping] = None) -> Dict:
    """Balance → choose the model by cross-validation → train → evaluate on a held-out split
    of a training-sample tree.

    Parameters
    ----------
    samples : path-like
        Training-sample tree or manifest.
    out : path-like
        Output directory: ``split/`` (``train.csv``, ``test.csv`` manifests),
        ``balance/``, ``selection/`` (``cv.csv``, ``cv.png``), ``model/model.pt`` (+ history
        and curves), ``qc/`` and ``summary.json``.
    test_fraction : float
        Share of each class held out for QC (default 0.2), split with ``seed``.
    balance : mapping, optional
        Keyword arguments of :func:`~geoml_hub.balancing.balance_samples`.
    train : mapping, optional
        Fields of :class:`~geoml_hub.training.TrainConfig` (``model`` is the cross-validation's
        choice).
    select : mapping, optional
        Fields of :class:`~geoml_hub.selection.SelectParams` (candidates, cv_folds).

    Returns
    -------
    dict
        The pipeline summary; ``qc`` holds the QC ``summary.json`` content, ``selection`` the
        cross-validation table (:func:`~geoml_hub.selection.cross_validate`).
    """
    out = Path(out)
    started = time.perf_counter()
    check_parameters(test_fraction, seed, balance, train, select=select)
    sample_set = load_samples(samples)
    report(progress, 0.0, f"{len(sample_set)} samples in {len(sample_set.classes)} classes")
    tr, te = stratified_split(sample_set.labels(), test_fraction, seed)
    train_set, test_set = sample_set.subset(tr), sample_set.subset(te)
    write_manifest(out / "split" / "train.csv", train_set)
    write_manifest(out / "split" / "test.csv", test_set)

    result, steps = _balance_and_train(train_set, out, seed, balance, train, progress, 0.0, 0.1, 0.9, select)
    qc = evaluate_model(result.model_path, test_set, out / "qc", device=result.device,
                        progress=scaled(progress, 0.9, 1.0))
    summary = {
        "pipeline": "patches", "samples": str(samples), "seed": seed, "test_fraction": test_fraction,
        "n_samples": len(sample_set), "n_train": len(train_set), "n_test": len(test_set),
        **steps,
        "qc": qc, "seconds": round(time.perf_counter() - started, 1),
        "outputs": {"model": str(result.model_path), "qc": str(out / "qc"), "balance": str(out / "balance"),
                    "selection": str(out / "selection")},
    }
    write_json(out / "summary.json", summary)
    report(progress, 1.0, f"overall accuracy {qc['overall_accuracy']:.3f}")
    return summary


def run_scene_pipeline(scene: Sequence[PathLike], reference: PathLike, out: PathLike,
                       reference_nodata: Optional[float] = 0, patch_size: int = 1, test_fraction: float = 0.3,
                       seed: int = 0, class_names: Optional[Mapping[int, str]] = None, stride: Optional[int] = None,
                       balance: Optional[Mapping] = None, train: Optional[Mapping] = None,
                       progress: Optional[ProgressCallback] = None, select: Optional[Mapping] = None) -> Dict:
    """Split regions → extract → balance → choose the model by cross-validation over whole
    regions → train → classify → validate on a labelled scene.

    Parameters
    ----------
    scene : sequence of path-like
        The scene (one multi-band file or single-band files on one grid).
    reference : path-like
        Label raster on the scene's grid.
    out : path-like
        Output directory: ``split/`` (``reference_train.tif``, ``reference_test.tif``,
        ``regions.csv``), ``samples/``, ``balance/``, ``selection/``, ``model/``,
        ``classification.tif``, ``qc/`` and ``summary.json``.
    reference_nodata : float, optional
        The reference's unlabelled value (default 0).
    patch_size : int
        Odd sample window (1 = pixel classifier).
    test_fraction : float
        Share of each class's labelled pixels, in whole regions, held out for QC.
    select : mapping, optional
        Fields of :class:`~geoml_hub.selection.SelectParams`; the folds hold whole training
        regions.

    Returns
    -------
    dict
        The pipeline summary; ``qc`` holds the validation ``summary.json`` content,
        ``selection`` the cross-validation table.
    """
    out = Path(out)
    started = time.perf_counter()
    scene = [scene] if isinstance(scene, (str, Path)) else list(scene)
    check_parameters(test_fraction, seed, balance, train, select=select)
    if stride is not None and stride < 1:
        raise ParameterError(f"stride must be at least 1, got {stride}")
    check_scene_inputs(scene, reference, patch_size)
    split = split_regions(reference, out / "split", test_fraction, seed, reference_nodata)
    report(progress, 0.02, f"{len(split.train_regions)} training and {len(split.test_regions)} test regions")
    ext = extract_samples(scene, split.train_reference, out / "samples", patch_size, reference_nodata, class_names,
                          progress=scaled(progress, 0.02, 0.1))
    sample_set = load_samples(ext.root)
    result, steps = _balance_and_train(sample_set, out, seed, balance, train, progress, 0.1, 0.2, 0.85, select,
                                       by_region=True)
    cls = classify_scene(result.model_path, scene, out / "classification.tif", stride=stride,
                         device=result.device, progress=scaled(progress, 0.85, 0.95))
    qc = validate_classification(cls.path, split.test_reference, out / "qc", reference_nodata,
                                 progress=scaled(progress, 0.95, 1.0))
    tested_codes = {r["code"] for r in split.table if r.get("side") == "test"}
    summary = {
        "pipeline": "scene", "scene": [str(s) for s in scene], "reference": str(reference), "seed": seed,
        "patch_size": patch_size, "test_fraction": test_fraction,
        "regions": {"train": len(split.train_regions), "test": len(split.test_regions)},
        "classes_without_test_region": sorted({r["code"] for r in split.table} - tested_codes),
        "n_train_samples": len(sample_set),
        **steps,
        "classification": {"path": str(cls.path), "counts": cls.counts},
        "qc": qc, "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "summary.json", summary)
    report(progress, 1.0, f"overall accuracy {qc['overall_accuracy']:.3f}")
    return summary
