"""What each WPS process does, on resolved paths: the bridge from ``processes/`` to the core.

A process handler parses its inputs, resolves dataset names to paths
(:meth:`GeomlProcess.dataset`), calls one function here and sets the returned outputs.
The core modules are imported at module level: they load rasterio, torch and PyCM only inside
the functions that need them, so the server still answers GetCapabilities without loading
those. ``processes/`` reaches the core only through this module (also for the parameter classes,
:class:`BalanceParams`, :class:`TrainConfig`, :class:`EvaluateParams`, :class:`ClassifyParams`).

Every function takes the job's :class:`~geoml_hub.wps.ogc.process.JobContext` and returns a
dict ``{output identifier: value}`` where files are :class:`pathlib.Path` objects. Files
returned as complex outputs are written into ``job.workdir``: PyWPS copies (hard-links)
each into the job's output directory under its base name, so base names must be unique
within a process. Outputs that are directories (a training-sample tree) are written
straight into ``job.outputs`` and returned as dataset names (``jobs/<uuid>/...``).

Inputs are checked here as well as by the dataset-name rules: every raster input must be
a TIFF file (GDAL would otherwise also open, say, a VRT that reads files outside the data
roots), and every file a training-sample tree or manifest lists must lie inside the roots
the job may read (:func:`open_samples`).

The small parsers (:func:`parse_class_names`, :func:`check_version_names`) need no core
module: process modules call them from ``check()`` to refuse a bad literal before a job is
accepted.
"""

from __future__ import annotations

import json

import csv
import re
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from ... import balancing, classification, compatibility, extraction, training, validation
from ... import polygons as polygons_mod
# the parameter classes of the processes (processes/ reaches the core only through this module)
from ...balancing import BalanceParams  # noqa: F401
from ...classification import ClassifyParams  # noqa: F401
from ...compatibility import CompatibilityParams  # noqa: F401
from ...training import TrainConfig  # noqa: F401
from ...validation import EvaluateParams  # noqa: F401
from ...errors import DataError, GeomlError, ParameterError
from ...fileio import write_json
from ...progress import ProgressCallback, report, scaled
from ...samples import load_samples
from ..settings import current_settings
import geoml_hub.wps.ogc.inputs as ds
from .inputs import server_path_names

#: The first four bytes of a classic (``*``) or BigTIFF (``+``) file, little- or big-endian.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
TIFF_SUFFIXES = (".tif", ".tiff")

_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+ -]{0,39}$")


def _rel(job, path: Path) -> str:
    return job.dataset_name(path)


# -- parsers of literal inputs (no core import) ------------------------------------------------------

def parse_class_names(text: Optional[str]) -> Optional[Dict[int, str]]:
    """``"1=forest,2=water"`` -> ``{1: 'forest', 2: 'water'}`` (``None`` for an empty text).

    Raises
    ------
    ParameterError
        For an item that is not ``CODE=NAME`` with an integer code and a non-empty name,
        or a code given twice.
    """
    if text is None or not str(text).strip():
        return None
    out: Dict[int, str] = {}
    for item in str(text).split(","):
        if not item.strip():
            continue
        code, sep, name = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"class_names expects CODE=NAME pairs separated by commas, got {item.strip()!r}")
        try:
            key = int(code)
        except ValueError:
            raise ParameterError(f"class_names expects integer codes, got {code.strip()!r}") from None
        if key in out:
            raise ParameterError(f"class_names gives code {key} twice")
        out[key] = name.strip()
    return out or None


def check_version_names(name_a: str, name_b: str) -> None:
    """The two names of :func:`compare_classifications` name directories and table columns: plain
    words (letters, digits, ``_ . + -`` and spaces, at most 40 characters) that differ.

    Raises
    ------
    ParameterError
    """
    for ident, name in (("name_a", name_a), ("name_b", name_b)):
        if not isinstance(name, str) or not _VERSION_NAME.match(name) or name != name.strip():
            raise ParameterError(f"{ident} must be 1 to 40 letters, digits, spaces or _ . + - starting with a "
                                 f"letter or digit, got {str(name)[:40]!r}")
    if name_a == name_b:
        raise ParameterError(f"name_a and name_b must differ, both are {name_a!r}")


# -- input checks ---------------------------------------------------------------------------------------

def require_tiff(paths: Iterable, what: str, pixels: bool = True) -> None:
    """Raise :class:`DataError` unless every file starts with a TIFF header (and, with ``pixels``,
    has at most ``max_input_pixels`` pixels: :func:`check_pixels`).

    GDAL picks its driver by content, so without this a "raster" input could be a VRT or
    another format that reads other files on the server.
    """
    paths = list(paths)
    for p in paths:
        p = Path(p)
        try:
            with open(p, "rb") as fh:
                head = fh.read(4)
        except IsADirectoryError:
            raise DataError(f"{what} {p.name} is a directory, not a GeoTIFF file") from None
        if head not in TIFF_MAGIC:
            raise DataError(f"{what} {p.name} is not a GeoTIFF file")
    if pixels:
        check_pixels(paths, what)


def pixel_limit() -> int:
    """``max_input_pixels`` of the server's settings (0: no limit; also without settings)."""
    try:
        return int(current_settings().max_input_pixels)
    except GeomlError:
        return 0


def check_pixels(paths: Iterable, what: str, limit: Optional[int] = None) -> None:
    """Raise :class:`DataError` for a raster with more pixels (width x height) than ``limit``
    (default: the ``max_input_pixels`` setting), reading only its header: a file of a few
    kilobytes can declare a raster of billions of pixels that would fill the memory and the disk."""
    limit = pixel_limit() if limit is None else limit
    if not limit:
        return
    # imported here: rasterio (GDAL) stays out of the WPS server's request path until a raster is read
    import rasterio

    for p in paths:
        p = Path(p)
        try:
            with rasterio.open(p) as src:
                width, height = src.width, src.height
        except rasterio.errors.RasterioIOError as exc:
            raise DataError(f"{what} {p.name} cannot be read as a raster: {exc}") from None
        if width * height > limit:
            raise DataError(f"{what} {p.name} has {width * height} pixels ({width} x {height}), over the limit of "
                            f"{limit} pixels (max_input_pixels)")


def raster_pixels(path: Path) -> int:
    """Width x height of a raster (its header only); 0 when it cannot be read (the process says why)."""
    import rasterio  # as in check_pixels: GDAL stays off the request path until a raster is read

    try:
        with rasterio.open(path) as src:
            return int(src.width) * int(src.height)
    except rasterio.errors.RasterioIOError:
        return 0


def _fan_out_runner(job, path: Path):
    """The job's Kubernetes block runner when its raster ``path`` is large enough to fan out
    (``fan_out_min_pixels``), else ``None``."""
    runner = getattr(job, "block_runner", None)
    return runner if runner is not None and runner.wants(raster_pixels(path)) else None


def _local_workers(job, workers: int) -> int:
    """A job's ``workers`` input, at most the server's ``fan_out_parallelism``."""
    settings = getattr(job, "settings", None)
    cap = getattr(settings, "fan_out_parallelism", workers)
    return max(1, min(int(workers), int(cap)))


def _manifest_files(path: Path) -> List[Path]:
    """The files a manifest lists (relative entries resolved as the core does); rows the core
    would refuse are left to it."""
    files: Dict[Path, None] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if "file" not in (reader.fieldnames or []):
                return []
            for row in reader:
                name = row.get("file")
                if not name:
                    continue
                f = Path(name)
                files[f if f.is_absolute() else path.parent / f] = None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"manifest {path.name} cannot be read: {exc}") from None
    return list(files)


def _tree_files(root: Path, roots: List[Path]) -> List[Path]:
    """Every entry of a training-sample tree (class directories, then their files), each
    checked against ``roots`` before it is listed."""
    top = [p for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    ds.check_paths(top, roots, f"training-sample tree {root.name}")
    files = []
    for d in top:
        if d.is_dir():
            inner = [p for p in sorted(d.iterdir()) if not p.name.startswith(".")]
            ds.check_paths(inner, roots, f"training-sample tree {root.name}")
            files += inner
    return files


def open_samples(job, path: Path, roots: Optional[List[Path]] = None):
    """Open a training-sample tree or manifest after checking that every file it lists lies
    inside ``roots`` (default: the roots ``job`` may read) and that its GeoTIFF patches are TIFFs.

    Returns
    -------
    geoml_hub.samples.SampleSet

    Raises
    ------
    DatasetError
        If the tree or manifest reaches a file outside the allowed roots (a symbolic link,
        an absolute path or ``..`` in a manifest).
    DataError
        If a patch is not a TIFF, or the core cannot open the samples.
    """
    path = Path(path)
    if roots is None:
        roots = ds.allowed_roots(job.settings, job.access, job.store)
    if path.is_dir():
        files = _tree_files(path, roots)
    elif path.suffix.lower() == ".csv":
        files = _manifest_files(path)
        ds.check_paths(files, roots, f"manifest {path.name}")
    else:
        files = []
    # patches: small by construction, and thousands of them (no header read each)
    require_tiff([f for f in files if f.suffix.lower() in TIFF_SUFFIXES and f.is_file()], "sample file", pixels=False)
    sample_set = load_samples(path)
    # deeper symbolic links (inside a linked class directory) are caught here, before any pixel is read
    ds.check_paths(sorted({s.file for s in sample_set.samples}), roots, f"samples {path.name}")
    return sample_set


def scrub_server_paths(job, path: Path) -> Path:
    """Rewrite server paths in a JSON output to dataset names (``data/...``, ``jobs/<id>/...``),
    in place and atomically: users see the names they gave, not the server's layout."""
    subs = server_path_names(job.settings, extra=[(str(job.workdir), f"jobs/{job.uuid}")])

    def clean(value):
        if isinstance(value, str):
            for prefix, name in subs:
                if value.startswith(prefix):
                    return name + value[len(prefix):]
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    write_json(path, clean(json.loads(Path(path).read_text(encoding="utf-8"))))
    return path


def _move(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))
    return dest


def _overrides(**values) -> Dict:
    """The keyword arguments that were given (``None`` means: the core's default)."""
    return {k: v for k, v in values.items() if v is not None}


# -- processes ----------------------------------------------------------------------------------------------

def extract_samples(job, scene: Sequence[Path], reference: Path, patch_size: int = 1,
                    reference_nodata: Optional[float] = 0, class_names: Optional[str] = None,
                    test_fraction: float = 0.0, seed: int = 0, ignore_crs_name: bool = False,
                    progress: Optional[ProgressCallback] = None) -> Dict:
    """Training samples from the labelled pixels of a scene
    (:func:`geoml_hub.extraction.extract_samples`), optionally after a spatial split of the
    reference's regions (:func:`geoml_hub.extraction.split_regions`).

    The tree is written to ``job.outputs/samples``. With ``test_fraction > 0`` the split's
    ``reference_train.tif`` and ``reference_test.tif`` go to ``job.outputs`` and the samples
    come from the training side only.

    Returns the outputs ``samples``, ``reference_train`` and ``reference_test`` (dataset
    names; the last two only with a split), ``sample_count``, ``n_classes``, ``n_regions``,
    ``test_regions``, ``skipped_nodata``, ``class_counts`` (JSON: class name -> samples),
    ``regions`` (CSV of the extracted regions) and ``split_regions`` (CSV of the split).
    """
    scene = [Path(p) for p in scene]
    require_tiff(scene, "scene file")
    names = parse_class_names(class_names)
    polygons = None
    if Path(reference).suffix.lower() in (".geojson", ".json"):

        if names:
            raise ParameterError("class_names: leave it out, the polygons name their classes in their class property")
        report(progress, 0.0, "burning the polygons into labels on the scene's grid")
        polygons = polygons_mod.rasterize_polygons(reference, scene, job.workdir / "reference_polygons.tif")
        reference, names, reference_nodata = polygons.path, polygons.class_names, 0
    else:
        require_tiff([reference], "reference")
    if not 0 <= test_fraction < 1:
        raise ParameterError(f"test_fraction must be in [0, 1), got {test_fraction}")
    result: Dict = {}
    train_reference = Path(reference)
    extract_progress = progress
    if test_fraction > 0:
        report(progress, 0.0, "splitting the reference regions")
        split = extraction.split_regions(reference, job.workdir / "split", test_fraction, seed, reference_nodata)
        train_reference = _move(split.train_reference, job.outputs / "reference_train.tif")
        test_reference = _move(split.test_reference, job.outputs / "reference_test.tif")
        result.update(reference_train=job.dataset_name(train_reference),
                      reference_test=job.dataset_name(test_reference),
                      test_regions=len(split.test_regions),
                      split_regions=_move(job.workdir / "split" / "regions.csv", job.workdir / "split_regions.csv"))
        extract_progress = scaled(progress, 0.1, 1.0)
    res = extraction.extract_samples(scene, train_reference, job.outputs / "samples", patch_size, reference_nodata,
                                     names, ignore_crs_name, progress=extract_progress)
    counts = {name: int(n) for name, n in res.counts.items()}
    regions = job.workdir / "regions.csv"
    shutil.copyfile(res.root / "regions.csv", regions)
    if polygons is not None:  # the burnt labels are an output: the reference of the polygons
        result["reference_labels"] = job.dataset_name(_move(polygons.path, job.outputs / "reference_polygons.tif"))
    result.update(samples=job.dataset_name(res.root), sample_count=sum(counts.values()), n_classes=len(counts),
                  n_regions=sum(1 for r in res.regions if r.get("samples")), skipped_nodata=int(res.skipped_nodata),
                  class_counts=write_json(job.workdir / "class_counts.json", counts), regions=regions)
    result.setdefault("test_regions", 0)
    return result


def balance_samples(job, samples: Path, roots: Optional[List[Path]] = None,
                    progress: Optional[ProgressCallback] = None, **params) -> Dict:
    """Cluster-based balancing (ISDCT SB RAS geoportal algorithm,
    :func:`geoml_hub.balancing.balance_samples`) of a tree or manifest; ``params`` are the
    declared parameters (:class:`geoml_hub.balancing.BalanceParams`), passed on unchanged.

    Returns the outputs ``manifest`` (CSV of the kept samples, usable by train_model),
    ``summary`` (JSON), ``clusters_plot`` (PNG), ``samples_before``, ``samples_after``,
    ``ratio_before``, ``ratio_after`` (largest / smallest class) and ``n_classes``.
    """

    sample_set = open_samples(job, samples, roots)
    res = balancing.balance_samples(sample_set, progress=scaled(progress, 0.0, 0.9), **params)
    report(progress, 0.9, "writing the manifest and the cluster plot")
    paths = res.write(job.workdir / "balance")
    s = res.summary
    return {"manifest": paths["manifest"], "summary": scrub_server_paths(job, paths["summary"]),
            "clusters_plot": paths["plot"],
            "samples_before": s["total_before"], "samples_after": s["total_after"],
            "ratio_before": float(s["ratio_before"]), "ratio_after": float(s["ratio_after"]),
            "n_classes": len(s["classes"])}


def train_model(job, samples: Path, roots: Optional[List[Path]] = None, progress: Optional[ProgressCallback] = None,
                **params) -> Dict:
    """Train a classifier (:func:`geoml_hub.training.train_model`); ``params`` are fields of
    :class:`geoml_hub.training.TrainConfig` (``None`` keeps the core's recommended value).

    Returns the outputs ``model`` (``model.pt``), ``history`` (CSV), ``curves`` (PNG),
    ``val_overall_accuracy`` (of the best epoch; absent without a validation split),
    ``epochs_run``, ``best_epoch``, ``n_train``, ``n_val``, ``device`` and ``seconds``.
    """

    sample_set = open_samples(job, samples, roots)
    res = training.train_model(sample_set, job.workdir / "model.pt", progress=progress, **_overrides(**params))
    return {"model": res.model_path, "history": res.history_path, "curves": res.curves_path,
            "val_overall_accuracy": res.val_overall_accuracy, "epochs_run": len(res.history),
            "best_epoch": res.best_epoch, "n_train": res.n_train, "n_val": res.n_val, "device": res.device,
            "seconds": round(float(res.seconds), 3)}


def evaluate_model(job, model: Path, samples: Path, roots: Optional[List[Path]] = None,
                   progress: Optional[ProgressCallback] = None, **params) -> Dict:
    """Patch-level PyCM quality control of a model on a tree or manifest
    (:func:`geoml_hub.validation.evaluate_model`); ``params`` are the declared parameters
    (:class:`geoml_hub.validation.EvaluateParams`).

    Returns the outputs of :func:`validate_classification` plus ``predictions`` (CSV).
    """

    sample_set = open_samples(job, samples, roots)
    out = job.workdir / "qc"
    s = validation.evaluate_model(model, sample_set, out, progress=progress, **params)
    return {"overall_accuracy": s["overall_accuracy"], "kappa": s["kappa"], "n": s["n"],
            "summary": scrub_server_paths(job, out / "summary.json"), "report": out / "report.html",
            "matrix": out / "report_matrix.csv",
            "heatmap": out / "confusion_matrix.png", "pycm_object": out / "report.obj",
            "predictions": out / "predictions.csv"}


def classify_scene(job, model: Path, scene: Sequence[Path], confidence: bool = True,
                   progress: Optional[ProgressCallback] = None, **params) -> Dict:
    """Classify a scene window by window (:func:`geoml_hub.classification.classify_scene`);
    ``params`` are the declared parameters (:class:`geoml_hub.classification.ClassifyParams`).

    Returns the outputs ``classification`` (uint8 GeoTIFF ``classification.tif``, nodata
    255), ``confidence`` (float32 GeoTIFF ``confidence.tif``, probability of the predicted class,
    nodata -1; when ``confidence``), ``compatible`` and ``compatibility`` (JSON summary of the
    compatibility check; when ``compatibility_check``), ``pixels``, ``nodata_pixels``, ``stride``
    and ``class_counts`` (JSON: class name -> pixels).
    """

    scene = [Path(p) for p in scene]
    require_tiff(scene, "scene file")
    out = job.workdir / "classification.tif"
    conf = job.workdir / "confidence.tif" if confidence else None
    workers = _local_workers(job, params.pop("workers", 1))
    runner = _fan_out_runner(job, scene[0])
    if runner is not None:  # the blocks run as Kubernetes Jobs; this worker assembles them
        checked = None
        if params.pop("compatibility_check", True):
            checked = classification.quick_check(classification.as_model(model, params.get("device", "auto")), scene,
                                                 params.get("band_map"), scaled(progress, 0.0, 0.05))
        blocks = job.workdir / "blocks"
        task = classification.plan_classification(model, scene, blocks, runner.blocks, confidence=conf is not None,
                                                  **params)
        runner.run(task, scaled(progress, 0.05, 0.95))
        res = classification.assemble(task, out, confidence=conf, progress=scaled(progress, 0.95, 1.0))
        res.compatibility = checked
        shutil.rmtree(blocks, ignore_errors=True)
    else:
        res = classification.classify_scene(model, scene, out, confidence=conf, progress=progress, workers=workers,
                                            **params)
    result = {"classification": res.path, "confidence": res.confidence, "pixels": int(res.pixels),
              "nodata_pixels": int(res.nodata_pixels), "stride": int(res.stride),
              "class_counts": write_json(job.workdir / "class_counts.json", {k: int(v) for k, v in res.counts.items()}),
              "compatible": None, "compatibility": None}  # None: left out of the response
    if res.compatibility is not None:
        result["compatible"] = _verdict(res.compatibility)
        result["compatibility"] = scrub_server_paths(job, write_json(job.workdir / "compatibility.json",
                                                                     res.compatibility))
    return result


def _verdict(summary: Dict) -> str:
    """``compatible``, ``not compatible`` or ``not checked`` (a literal output)."""
    return {True: "compatible", False: "not compatible"}.get(summary.get("compatible"), "not checked")


def check_compatibility(job, model: Path, scene: Sequence[Path], samples: Optional[Path] = None,
                        roots: Optional[List[Path]] = None, progress: Optional[ProgressCallback] = None,
                        **params) -> Dict:
    """Spectral compatibility of a model with a scene or a sample tree
    (:func:`geoml_hub.compatibility.check_compatibility`); ``params`` are the declared parameters
    (:class:`geoml_hub.compatibility.CompatibilityParams`).

    Returns the outputs ``compatible`` (``compatible`` or ``not compatible``), ``reason``,
    ``summary`` (JSON) and ``figure`` (PNG).

    Raises
    ------
    ParameterError
        Unless exactly one of ``scene`` and ``samples`` is given.
    """
    scene = [Path(p) for p in scene]
    if bool(scene) == bool(samples):
        raise ParameterError("give either scene (GeoTIFF files) or samples (a training-sample tree), not both")
    if scene:
        require_tiff(scene, "scene file")
        source = scene
    else:
        source = open_samples(job, samples, roots)
    out = job.workdir / "compatibility"
    s = compatibility.check_compatibility(model, source, out, progress=progress, **params)
    return {"compatible": _verdict(s), "reason": s["reason"],
            "summary": scrub_server_paths(job, out / "summary.json"), "figure": out / "compatibility.png"}


def compare_classifications(job, classification_a: Path, classification_b: Path, reference: Path,
                            name_a: str = "A", name_b: str = "B", reference_nodata: Optional[float] = 0,
                            ignore_crs_name: bool = False, progress: Optional[ProgressCallback] = None) -> Dict:
    """Compare two classifications against one reference
    (:func:`geoml_hub.validation.compare_classifications`).

    The core writes each version's reports under ``<name>/``; they are renamed to unique
    base names (``report_a.html``, ``heatmap_a.png``, ``summary_a.json``, ``matrix_a.csv`` and
    the same with ``_b``) because PyWPS stores each file output under its base name.

    Returns the outputs ``better`` (the better name, or ``tie``), ``pycm_best`` (PyCM
    Compare's verdict, or ``none``), ``overall_accuracy_a``/``_b``, ``kappa_a``/``_b``,
    ``summary`` (JSON), ``comparison`` (CSV) and the per-version files.
    """

    check_version_names(name_a, name_b)
    require_tiff([classification_a, classification_b], "classification")
    require_tiff([reference], "reference")
    out = job.workdir / "compare"
    s = validation.compare_classifications(classification_a, classification_b, reference, out, (name_a, name_b),
                                           reference_nodata, ignore_crs_name, progress=progress)
    result = {"better": s["better"] or "tie", "pycm_best": s["pycm_best"] or "none",
              "summary": scrub_server_paths(job, out / "summary.json"), "comparison": out / "comparison.csv"}
    table = s["table"]
    for suffix, name in (("a", name_a), ("b", name_b)):
        side = out / name
        result[f"overall_accuracy_{suffix}"] = table["overall_accuracy"][name]
        result[f"kappa_{suffix}"] = table["kappa"][name]
        result[f"report_{suffix}"] = _move(side / "report.html", job.workdir / f"report_{suffix}.html")
        result[f"heatmap_{suffix}"] = _move(side / "confusion_matrix.png", job.workdir / f"heatmap_{suffix}.png")
        result[f"matrix_{suffix}"] = _move(side / "report_matrix.csv", job.workdir / f"matrix_{suffix}.csv")
        result[f"summary_{suffix}"] = scrub_server_paths(
            job, _move(side / "summary.json", job.workdir / f"summary_{suffix}.json"))
        result[f"pycm_object_{suffix}"] = _move(side / "report.obj", job.workdir / f"pycm_{suffix}.obj")
    return result


def validate_classification(job, classification: Path, reference: Path, reference_nodata: Optional[float] = 0,
                            ignore_crs_name: bool = False, confidence: Optional[Path] = None,
                            progress: Optional[ProgressCallback] = None) -> Dict:
    """PyCM quality control of a classification on the labelled reference pixels
    (:func:`geoml_hub.validation.validate_classification`).

    Returns the outputs ``overall_accuracy``, ``kappa``, ``n`` (labelled pixels compared),
    ``summary`` (JSON), ``report`` (PyCM HTML), ``matrix`` (CSV), ``heatmap`` (PNG) and
    ``pycm_object`` (PyCM's object file); with ``confidence`` (the classification's confidence
    raster) also ``reliability`` (PNG: accuracy per confidence bin, the table in the summary).
    """

    require_tiff([classification], "classification")
    require_tiff([reference], "reference")
    if confidence is not None:
        require_tiff([confidence], "confidence raster")
    out = job.workdir / "qc"
    runner = _fan_out_runner(job, classification)
    if runner is not None:  # per-block confusion counts as Kubernetes Jobs, fused here
        blocks = job.workdir / "qc-blocks"
        task = validation.plan_qc(classification, reference, blocks, runner.blocks, reference_nodata, ignore_crs_name)
        runner.run(task, scaled(progress, 0.0, 0.9))
        s = validation.qc_report(validation.fuse_counts(task), classification, reference, out, reference_nodata,
                                 confidence=confidence, ignore_crs_name=ignore_crs_name)
        shutil.rmtree(blocks, ignore_errors=True)
    else:
        s = validation.validate_classification(classification, reference, out, reference_nodata,
                                               ignore_crs_name=ignore_crs_name, confidence=confidence,
                                               progress=progress)
    return {"overall_accuracy": s["overall_accuracy"], "kappa": s["kappa"], "n": s["n"],
            "summary": scrub_server_paths(job, out / "summary.json"), "report": out / "report.html",
            "matrix": out / "report_matrix.csv",
            "heatmap": out / "confusion_matrix.png", "pycm_object": out / "report.obj",
            "reliability": out / "reliability.png" if confidence is not None else None}
