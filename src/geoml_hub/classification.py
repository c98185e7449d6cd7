"""Classification of patches (sample trees, manifests) and of whole scenes.

Scenes are read tile by tile (never whole), inference is batched, and the result is a
single-band ``uint8`` GeoTIFF on the scene's grid (CRS, transform) with a colour table,
class names in the ``CLASS_NAMES`` tag, and nodata (255) where the input is nodata.

* Pixel models (patch size 1) predict every pixel.
* Patch models slide over the scene with a ``stride``: the scene is cut into
  ``stride``×``stride`` blocks; each block gets the class predicted for the patch
  centred on it (edges padded by repeating edge pixels). ``stride=1`` is a dense
  per-pixel sliding window.
* A quick spectral compatibility check (:func:`geoml_hub.compatibility.quick_check`) runs
  first and its verdict is returned; ``confidence=`` also writes the probability of the
  predicted class per pixel (float32, nodata -1).
* ``method``: ``dense`` runs the network fully convolutionally (:mod:`geoml_hub.dense`),
  ``patch`` runs every patch (pixel) on its own, ``auto`` (default) is ``dense`` for
  pixel models (identical classes) and ``patch`` for patch models (dense lost held-out
  accuracy on real data; ``docs/algorithms.md``).
"""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .bands import check_samples, resolve_band_map
from .compatibility import quick_check
from .errors import ModelError, ParameterError
from .fileio import PathLike, atomic_path, write_csv
from .models import Model, load_model
from .params import device_param, param, tta_param
from .progress import ProgressCallback, report, scaled
from .samples import SampleSet, load_samples
from .scene import GDAL_CACHE_MB, Scene

NODATA = 255
#: Nodata of the confidence raster (float32; valid values are probabilities in [0, 1]).
CONFIDENCE_NODATA = -1.0
METHODS = ("auto", "dense", "patch")
PREDICTIONS_HEADER = ("file", "index", "reference", "predicted", "predicted_code", "probability")


def as_model(model: Union[Model, PathLike], device: str = "auto") -> Model:
    """Return ``model`` itself, or load it from a path."""
    return model if isinstance(model, Model) else load_model(model, device=device)


def predict_samples(model: Union[Model, PathLike], samples: Union[SampleSet, PathLike], out_csv: Optional[PathLike] = None,
                    batch_size: int = 128, device: str = "auto", tta: bool = False,
                    progress: Optional[ProgressCallback] = None) -> Dict[str, np.ndarray]:
    """Predict the class of every sample of a tree or manifest.

    Parameters
    ----------
    model : Model or path-like
    samples : SampleSet or path-like
        Tree or manifest; the reference class of a sample is its class directory.
    out_csv : path-like, optional
        Write ``file, index, reference, predicted, predicted_code, probability`` rows.
    batch_size : int
        Samples read and predicted at a time (memory is bounded by one batch).
    tta : bool
        Average over the 8 flips/rotations of each patch (8× the inference cost).

    Returns
    -------
    dict
        ``reference`` and ``predicted``: ``(N,)`` arrays of class names (the reference is
        a name of the samples' class table); ``probability``: ``(N,)`` float32 of the
        predicted class.

    Raises
    ------
    ModelError
        If the samples' band count or patch size does not match the model.
    """
    model = as_model(model, device)
    sample_set = samples if isinstance(samples, SampleSet) else load_samples(samples)
    check_samples(model, sample_set)
    band_idx = [b - 1 for b in model.bands]
    n = len(sample_set)
    pred = np.empty(n, dtype=np.int64)
    prob = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        pos = range(start, min(n, start + batch_size))
        x = sample_set.read(pos)[:, band_idx]
        p = model.predict_proba(x, batch_size=batch_size, tta=tta)
        pred[start:start + len(pos)] = p.argmax(1)
        prob[start:start + len(pos)] = p.max(1)
        report(progress, (start + len(pos)) / n, f"predicted {start + len(pos)}/{n} samples")
    names = np.array(model.class_names, dtype=object)
    result = {"reference": np.array([s.class_name for s in sample_set.samples], dtype=object),
              "predicted": names[pred], "probability": prob}
    if out_csv is not None:
        codes = model.class_codes
        write_csv(out_csv, PREDICTIONS_HEADER,
                  ((str(s.file), s.index, s.class_name, model.class_names[k], codes[k], f"{pr:.4f}")
                   for s, k, pr in zip(sample_set.samples, pred, prob)))
    return result


def colour_table(codes: Sequence[int]) -> Dict[int, tuple]:
    """A GDAL colour table: a distinct ``tab20`` colour per class code, nodata (255) black."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    table = {int(c): tuple(int(round(255 * v)) for v in cmap(i % 20)) for i, c in enumerate(codes)}
    table[NODATA] = (0, 0, 0, 0)
    return table


@dataclass
class SceneClassification:
    """What :func:`classify_scene` wrote."""

    path: Path
    counts: Dict[str, int]
    pixels: int
    nodata_pixels: int
    stride: int
    #: The confidence raster written, if asked for.
    confidence: Optional[Path] = None
    #: The compatibility check's summary (:func:`geoml_hub.compatibility.check_compatibility`), if it ran.
    compatibility: Optional[Dict] = None


@dataclass(frozen=True)
class ClassifyParams:
    """The parameters of :func:`classify_scene`, declared once (:mod:`geoml_hub.params`): the
    ``classify`` command's options, the ``classify_scene`` WPS inputs and
    ``docs/parameters.md`` come from these fields.

    Attributes
    ----------
    stride : int or None
        Block size of patch models (``None``: half the patch size).
    band_map : tuple of int or None
        Scene band for each model band.
    tile_size : int
        Edge of the windows the scene is classified in.
    device : {'auto', 'cpu', 'cuda'}
    tta : bool
        Test-time augmentation of patch models.
    method : {'auto', 'dense', 'patch'}
        ``dense``: fully convolutional evaluation (:mod:`geoml_hub.dense`); ``patch``: every
        patch (or pixel) through the network on its own; ``auto``: ``dense`` for pixel
        models (identical classes), ``patch`` for patch models (see ``docs/algorithms.md``).
    workers : int
        Worker processes over row-blocks of whole windows (:mod:`geoml_hub.blocks`); 1: this process.
    """

    stride: Optional[int] = param(
        None, "integer", "Stride",
        "Patch models: edge of the blocks that each take the class of the patch centred on them. Default: half the "
        "patch size. Ignored by pixel models, which classify every pixel.", minimum=1, maximum=4096, unit="pixels")
    band_map: Optional[Tuple[int, ...]] = param(
        None, "integers", "Band map",
        "Scene band (1-based) for each band the model reads, comma-separated, e.g. 2,3,4; needed when the scene's "
        "bands differ from the training samples'.")
    tile_size: int = param(
        512, "integer", "Tile size",
        "Edge of the windows the scene is read and classified in; memory is bounded by one window whatever the "
        "scene size.", minimum=64, maximum=4096, unit="pixels")
    device: str = device_param()
    tta: bool = tta_param()
    method: str = param(
        "auto", "string", "Inference method",
        "dense: the network runs fully convolutionally over whole windows (pixel models: BatchNorm folded into one "
        "matrix-product chain, same classes; patch models: convolutions once per window, features pooled per "
        "patch, 2-70x faster but not identical with patch-by-patch, because patches see their real neighbours "
        "instead of zero padding). patch: every patch through the network on its own (used anyway with "
        "test-time augmentation, and for strides that are not a multiple of the network's down-sampling). auto "
        "(default): dense for pixel models, patch for patch models, whose held-out accuracy dropped with dense.",
        choices=METHODS)
    compatibility_check: bool = param(
        True, "boolean", "Compatibility check",
        "Before classifying, compare a sample of the scene's pixels with the model's training data "
        "(geoml_hub.compatibility, default thresholds) and report whether the model is fit for the scene; the "
        "classification runs either way.", cli="--no-compatibility-check",
        flag_help="skip the spectral compatibility check that runs before the classification")
    workers: int = param(
        1, "integer", "Worker processes",
        "Processes that classify the scene in parallel, each a block of whole windows of rows; the blocks are "
        "assembled into one Cloud-Optimized GeoTIFF with overviews and the classes are identical to one process. "
        "1: this process only. On a WPS whose jobs run on Kubernetes, scenes above the fan-out size run as a "
        "fan-out Job instead (docs/wps.md).", minimum=1, maximum=64)


class _WindowClassifier:
    """What every window of one classification shares: the model, its stride and window edge,
    the dense evaluator (or none), the class codes, the scene bands to read and whether the
    confidence (probability of the predicted class) is wanted."""

    def __init__(self, model: Model, stride: Optional[int], tile_size: int, batch_size: int, tta: bool,
                 method: str, want: bool = False):
        if max(model.class_codes) >= NODATA or min(model.class_codes) < 0:
            raise ModelError(f"class codes {model.class_codes} must be in 0..254 for a uint8 classification")
        pr, pc = model.patch_size
        self.model = model
        self.pixel = pixel = model.is_pixel_model
        stride = 1 if pixel else int(stride) if stride is not None else max(1, min(pr, pc) // 2)
        if stride < 1 or tile_size < 1:
            raise ParameterError(f"stride and tile size must be at least 1 (got {stride}, {tile_size})")
        if method not in METHODS:
            raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.stride = stride
        self.tile = max(stride, (tile_size // stride) * stride)  # whole blocks per tile
        self.batch_size = batch_size
        self.tta = tta
        self.want = want
        self.dense = None
        if method == "auto":
            method = "dense" if pixel else "patch"
        if method == "dense" and not (tta and not pixel):
            from .dense import dense_evaluator  # imports torch: kept off the light path (class names, CSV)

            self.dense = dense_evaluator(model)
            if self.dense is not None and not pixel and not self.dense.supports(stride):
                self.dense = None
        self.codes = np.array(model.class_codes, dtype=np.uint8)
        self.bands: List[int] = []

    def window(self, sc: Scene, r: int, c: int, h: int, w: int):
        """``(classes, valid, confidence or None)`` of window ``(r, c, h, w)``: ``(h, w)`` uint8
        codes (255 where not valid), the ``(h, w)`` bool mask of pixels whose bands all have data,
        and (when wanted) the ``(h, w)`` float32 probability of the predicted class."""
        bands, codes, model, want = self.bands, self.codes, self.model, self.want
        conf = None
        if self.pixel and self.dense is not None:
            data, valid = sc.read(bands, r, c, h, w)
            if want:
                proba = self.dense.predict(data.reshape(len(bands), -1), proba=True)
                cls = codes[proba.argmax(1)].reshape(h, w)
                conf = proba.max(1).reshape(h, w)
            else:
                cls = codes[self.dense.predict(data.reshape(len(bands), -1))].reshape(h, w)
            cls[~valid] = NODATA
        elif self.dense is not None:
            cls, valid, conf = _classify_tile_dense(self.dense, sc, bands, r, c, h, w, self.stride, codes,
                                                    model.patch_size, want)
            cls[~valid] = NODATA
        elif self.pixel:
            data, valid = sc.read(bands, r, c, h, w)
            x = data.reshape(len(bands), -1).T[:, :, None, None]
            cls = np.full(h * w, NODATA, dtype=np.uint8)
            conf = np.full(h * w, CONFIDENCE_NODATA, dtype=np.float32) if want else None
            ok = valid.ravel()
            if ok.any():
                proba = model.predict_proba(x[ok], batch_size=self.batch_size * 256)
                cls[ok] = codes[proba.argmax(1)]
                if want:
                    conf[ok] = proba.max(1)
            cls = cls.reshape(h, w)
            conf = conf.reshape(h, w) if want else None
        else:
            cls, valid, conf = _classify_tile(model, sc, bands, r, c, h, w, self.stride, codes, self.batch_size,
                                              self.tta, want)
            cls[~valid] = NODATA
        if want:
            conf = np.where(valid, np.clip(conf, 0.0, 1.0), CONFIDENCE_NODATA).astype(np.float32)
        return cls, valid, conf

    def write_metadata(self, dst, cdst=None) -> None:
        names_tag = json.dumps({str(c): n for c, n in zip(self.model.class_codes, self.model.class_names)})
        dst.write_colormap(1, colour_table(self.model.class_codes))
        dst.set_band_description(1, "classification")
        dst.update_tags(CLASS_NAMES=names_tag, MODEL=str(self.model.meta.get("manifest_sha256", "")))
        if cdst is not None:
            cdst.set_band_description(1, "confidence")
            cdst.update_tags(MEANING="probability of the predicted class", CLASS_NAMES=names_tag,
                             MODEL=str(self.model.meta.get("manifest_sha256", "")))

    def classify_rows(self, sc: Scene, dst, cdst, rows: Tuple[int, int], progress: Optional[ProgressCallback],
                      row_shift: int = 0) -> Tuple[np.ndarray, int]:
        """Classify the windows whose first row is in ``rows`` into ``dst`` (and the confidence into
        ``cdst`` unless ``None``), rows shifted up by ``row_shift``; return the pixels per class
        index and the nodata pixels."""
        import rasterio

        counts = np.zeros(len(self.codes), dtype=np.int64)
        nodata_pixels = 0
        tiles = [t for t in sc.tiles(self.tile) if rows[0] <= t[0] < rows[1]]
        for k, (r, c, h, w) in enumerate(tiles):
            cls, valid, conf = self.window(sc, r, c, h, w)
            window = rasterio.windows.Window(c, r - row_shift, w, h)
            dst.write(cls, 1, window=window)
            if cdst is not None:
                cdst.write(conf, 1, window=window)
            nodata_pixels += int((~valid).sum())
            counts += np.bincount(np.searchsorted(self.codes, cls[valid]), minlength=len(self.codes))
            report(progress, (k + 1) / len(tiles), f"classified window {k + 1}/{len(tiles)}")
        return counts, nodata_pixels


def _gtiff_profile(sc: Scene, height: int, transform) -> Dict:
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "width": sc.width, "height": height,
               "crs": sc.crs, "transform": transform, "nodata": NODATA, "compress": "deflate",
               "tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}
    if sc.width < 256 or height < 256:
        profile.update(tiled=False, blockxsize=None, blockysize=None)
        profile = {k: v for k, v in profile.items() if v is not None}
    return profile


def _confidence_profile(profile: Dict) -> Dict:
    return dict(profile, dtype="float32", nodata=CONFIDENCE_NODATA, predictor=3)


def classify_scene(model: Union[Model, PathLike], scene: Union[Sequence[PathLike], PathLike], out: PathLike,
                   stride: Optional[int] = None, band_map: Optional[Sequence[int]] = None,
                   tile_size: int = ClassifyParams.tile_size, batch_size: int = 256,
                   device: str = ClassifyParams.device, tta: bool = ClassifyParams.tta,
                   method: str = ClassifyParams.method,
                   compatibility_check: bool = ClassifyParams.compatibility_check,
                   confidence: Optional[PathLike] = None, workers: int = ClassifyParams.workers,
                   progress: Optional[ProgressCallback] = None) -> SceneClassification:
    """Classify a scene window by window into a ``uint8`` classification GeoTIFF.

    Parameters
    ----------
    model : Model or path-like
    scene : path-like or sequence of path-like
        One multi-band GeoTIFF or several files on one grid (bands in the order given).
    out : path-like
        Output GeoTIFF (written atomically; tiled, DEFLATE-compressed; with ``workers`` > 1 a
        Cloud-Optimized GeoTIFF with overviews, :func:`assemble`).
    stride : int, optional
        Block size in pixels for patch models (default: half the patch size; ignored
        for pixel models, which predict every pixel).
    band_map : sequence of int, optional
        1-based scene band for each model band, when the scene's bands differ from the
        training samples'.
    tile_size : int
        Output tile edge in pixels; memory is bounded by one tile (plus the patch halo
        and GDAL's block cache, capped at 64 MB), whatever the scene size.
    batch_size : int
        Patches (or pixels ×256) per forward pass.
    tta : bool
        Patch models: average over the 8 flips/rotations of each patch (8× the cost; runs
        patch by patch whatever ``method``).
    method : {'auto', 'dense', 'patch'}
        ``auto`` (default): ``dense`` for pixel models, ``patch`` for patch models (on the
        real Chiapas data the dense patch path lost held-out accuracy; ``docs/algorithms.md``).
        ``dense``: fully convolutional inference (:mod:`geoml_hub.dense`): a
        pixel model as one matrix-product chain with BatchNorm folded (same classes as
        ``patch``); a patch model with its convolutions run once per window and the
        features pooled per patch (patches see real neighbours instead of zero padding:
        close to, not identical with, ``patch``; falls back to ``patch`` when the stride
        is not a multiple of the network's down-sampling factor). ``patch``: each patch
        (pixel) through the network on its own.
    compatibility_check : bool
        First run :func:`geoml_hub.compatibility.quick_check` (the check on a sample of
        pixels, default thresholds); its summary is returned in
        ``compatibility`` and the classification runs whatever the verdict.
    confidence : path-like, optional
        Also write the confidence raster: the probability of the predicted class, float32 in
        [0, 1], on the same grid (tiled, DEFLATE-compressed, written atomically), nodata
        :data:`CONFIDENCE_NODATA` (-1) where the scene is nodata. Patch models give every pixel
        of a block the probability of the block's patch. Without it the dense pixel path takes
        the argmax of the logits only (no softmax).
    workers : int
        Worker processes (1: this process). With more, the scene is cut into ``workers``
        row-blocks of whole windows (:class:`geoml_hub.blocks.BlockPlan`), classified in
        parallel and assembled (the confidence raster too): the classes are identical to
        ``workers=1``.

    Returns
    -------
    SceneClassification

    Raises
    ------
    DataError, GridMismatchError
        If a scene file is missing, unreadable or off-grid.
    ModelError
        If the scene's bands do not fit the model, or a class code exceeds 254.
    ParameterError
        If ``stride``, ``tile_size`` or ``workers`` is below 1, or ``method`` is unknown.
    """
    import rasterio

    if workers < 1:
        raise ParameterError(f"workers must be at least 1, got {workers}")
    checked = None
    if compatibility_check:
        checked = quick_check(as_model(model, device), scene, band_map, scaled(progress, 0.0, 0.05))
        progress = scaled(progress, 0.05, 1.0)
    if workers > 1:
        from .blocks import run_local  # the fan-out runner: only with worker processes

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".blocks-", dir=out.parent) as tmp:
            task = plan_classification(model, scene, tmp, workers, stride=stride, band_map=band_map,
                                       tile_size=tile_size, batch_size=batch_size, device=device, tta=tta,
                                       method=method, confidence=confidence is not None)
            run_local(task, workers, scaled(progress, 0.0, 0.95), message="classified")
            result = assemble(task, out, confidence=confidence, progress=scaled(progress, 0.95, 1.0))
        result.compatibility = checked
        return result
    model = as_model(model, device)
    want = confidence is not None
    wc = _WindowClassifier(model, stride, tile_size, batch_size, tta, method, want)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), Scene(scene) as sc:
        wc.bands = resolve_band_map(model, sc.count, band_map, str(sc.paths[0]))
        profile = _gtiff_profile(sc, sc.height, sc.transform)
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(out))
            dst = stack.enter_context(rasterio.open(tmp, "w", **profile))
            cdst = None
            if want:
                ctmp = stack.enter_context(atomic_path(confidence))
                cdst = stack.enter_context(rasterio.open(ctmp, "w", **_confidence_profile(profile)))
            counts, nodata_pixels = wc.classify_rows(sc, dst, cdst, (0, sc.height), progress)
            wc.write_metadata(dst, cdst)
    # model classes are ordered by code, so position in ``codes`` is the class index
    by_name = {name: int(n) for name, n in zip(model.class_names, counts)}
    return SceneClassification(Path(out), by_name, sc.width * sc.height, nodata_pixels, wc.stride,
                               Path(confidence) if want else None, checked)


def plan_classification(model: Union[Model, PathLike], scene: Union[Sequence[PathLike], PathLike],
                        block_dir: PathLike, blocks: int, stride: Optional[int] = None,
                        band_map: Optional[Sequence[int]] = None, tile_size: int = ClassifyParams.tile_size,
                        batch_size: int = 256, device: str = ClassifyParams.device, tta: bool = ClassifyParams.tta,
                        method: str = ClassifyParams.method, confidence: bool = False) -> Path:
    """Check a classification and write its block task (:func:`geoml_hub.blocks.write_task`).

    The scene is cut into at most ``blocks`` row-blocks of whole classification windows
    (``tile_size`` rounded down to a multiple of the stride), so that block ``i``
    (:func:`classify_block`) writes exactly the rows that :func:`classify_scene` with one
    process would, with the same classes: every window reads its patch and receptive-field
    margin from the scene itself, across block boundaries.

    Parameters
    ----------
    model : Model or path-like
        A path is needed when the blocks run in other processes (a loaded model is saved
        nowhere: give its file).
    block_dir : path-like
        Where the task and the block files go (created).
    blocks : int
        Number of blocks wanted (fewer when the scene has fewer rows of windows).
    confidence : bool
        Blocks also write their confidence raster (``block-NNNN.confidence.tif``).
    Other parameters as :func:`classify_scene`.

    Returns
    -------
    Path
        The task file ``block_dir/task.json``.

    Raises
    ------
    DataError, GridMismatchError, ModelError, ParameterError
        As :func:`classify_scene`, before anything is written.
    """
    from .blocks import BlockPlan, write_task  # geoml_hub.blocks imports this module by name

    model_path = getattr(model, "path", None) if isinstance(model, Model) else model
    if model_path is None:
        raise ParameterError("a fan-out needs the model's file, not a loaded model")
    loaded = as_model(model, "cpu")
    wc = _WindowClassifier(loaded, stride, tile_size, batch_size, tta, method)
    paths = [scene] if isinstance(scene, (str, Path)) else list(scene)
    with Scene(paths) as sc:
        resolve_band_map(loaded, sc.count, band_map, str(sc.paths[0]))
        plan = BlockPlan.split(sc.height, sc.width, wc.tile, blocks)
    args = {"model": str(Path(model_path).resolve()), "scene": [str(Path(p).resolve()) for p in paths],
            "stride": wc.stride, "band_map": list(band_map) if band_map is not None else None,
            "tile_size": int(tile_size), "batch_size": int(batch_size), "device": device, "tta": bool(tta),
            "method": method, "confidence": bool(confidence)}
    return write_task(block_dir, "classify", plan, args)


def classify_block(args: Dict, plan, index: int, out_dir: PathLike,
                   progress: Optional[ProgressCallback] = None) -> Dict:
    """Classify block ``index`` of a plan into ``out_dir/block-NNNN.tif`` (atomically; with the
    task's ``confidence``, its confidence raster into ``block-NNNN.confidence.tif``).

    Parameters
    ----------
    args : dict
        The task's arguments (:func:`plan_classification`).
    plan : geoml_hub.blocks.BlockPlan
    index : int
    out_dir : path-like

    Returns
    -------
    dict
        ``file`` (the block GeoTIFF's name), ``confidence`` (its confidence raster's, or ``None``), ``rows`` ``[start, stop]``, ``counts`` (pixels per
        class index), ``nodata_pixels`` and ``stride``.
    """
    import rasterio

    from .blocks import block_name  # geoml_hub.blocks imports this module by name

    start, stop = plan.block(index)
    model = as_model(args["model"], args["device"])
    want = bool(args.get("confidence"))
    wc = _WindowClassifier(model, args["stride"], args["tile_size"], args["batch_size"], args["tta"], args["method"],
                           want)
    name = block_name(index, ".tif")
    conf_name = block_name(index, ".confidence.tif") if want else None
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), Scene(args["scene"]) as sc:
        wc.bands = resolve_band_map(model, sc.count, args["band_map"], str(sc.paths[0]))
        if (sc.height, sc.width) != (plan.height, plan.width):
            raise ParameterError(f"{sc.paths[0]}: the scene is {sc.height}x{sc.width}, the plan "
                                 f"{plan.height}x{plan.width}")
        transform = sc.transform * rasterio.Affine.translation(0, start)
        profile = _gtiff_profile(sc, stop - start, transform)
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(Path(out_dir) / name))
            dst = stack.enter_context(rasterio.open(tmp, "w", **profile))
            cdst = None
            if want:
                ctmp = stack.enter_context(atomic_path(Path(out_dir) / conf_name))
                cdst = stack.enter_context(rasterio.open(ctmp, "w", **_confidence_profile(profile)))
            counts, nodata_pixels = wc.classify_rows(sc, dst, cdst, (start, stop), progress, row_shift=start)
            wc.write_metadata(dst, cdst)
    return {"file": name, "confidence": conf_name, "rows": [start, stop], "counts": [int(n) for n in counts],
            "nodata_pixels": int(nodata_pixels), "stride": wc.stride}


def _mosaic_cog(task: Path, results, key: str, plan, out: PathLike, progress, resampling: str) -> None:
    """Copy the blocks' ``key`` files into one tiled GeoTIFF of the whole grid, then write ``out``
    as a COG with overviews (GDAL's COG driver), keeping colour table, tags and nodata."""
    import rasterio
    import rasterio.shutil

    with rasterio.open(task.parent / results[0][key]) as src:
        profile = dict(src.profile, height=plan.height, transform=src.transform,
                       tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER")
        try:
            colormap = src.colormap(1)
        except ValueError:  # no colour table (the confidence raster)
            colormap = None
        tags, desc = src.tags(), src.descriptions[0]
    full = task.parent / f"assembled-{key}.tif"
    with rasterio.open(full, "w", **profile) as dst:
        for k, r in enumerate(results):
            start, stop = r["rows"]
            with rasterio.open(task.parent / r[key]) as src:
                for row in range(0, stop - start, 1024):
                    win = rasterio.windows.Window(0, row, plan.width, min(1024, stop - start - row))
                    dst.write(src.read(1, window=win), 1,
                              window=rasterio.windows.Window(0, start + row, plan.width, win.height))
            report(progress, (k + 1) / len(results), f"assembled block {k + 1}/{len(results)}")
        if colormap is not None:
            dst.write_colormap(1, colormap)
        dst.update_tags(**tags)
        if desc:
            dst.set_band_description(1, desc)
    with atomic_path(out) as tmp:
        rasterio.shutil.copy(full, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256,
                             OVERVIEW_RESAMPLING=resampling, RESAMPLING=resampling, BIGTIFF="IF_SAFER")
    full.unlink()


def assemble(task: PathLike, out: PathLike, confidence: Optional[PathLike] = None,
             progress: Optional[ProgressCallback] = None) -> SceneClassification:
    """Put the blocks of a classification task together into one Cloud-Optimized GeoTIFF.

    The blocks (:func:`classify_block`) are copied into one tiled GeoTIFF of the whole grid,
    then GDAL's COG driver (through ``rasterio.shutil.copy``) writes ``out`` with internal
    overviews (nearest neighbour: class codes are not averaged), DEFLATE compression, the
    colour table, the ``CLASS_NAMES``/``MODEL`` tags and nodata 255 of the blocks.

    Parameters
    ----------
    task : path-like
        The task file (``task.json``); the block files are beside it.
    out : path-like
        The COG (written atomically).
    confidence : path-like, optional
        Also assemble the blocks' confidence rasters into this COG (the task must have asked
        for them; overviews averaged).

    Returns
    -------
    SceneClassification
        Counts and nodata pixels summed over the blocks.

    Raises
    ------
    ParameterError
        If a block has no result, or ``confidence`` is asked for without block confidence rasters.
    """
    import rasterio

    from .blocks import block_results, read_task  # geoml_hub.blocks imports this module by name

    task = Path(task)
    _, plan, args = read_task(task)
    results = block_results(task.parent, plan.n)
    if confidence is not None and not all(r.get("confidence") for r in results):
        raise ParameterError(f"{task}: the blocks have no confidence rasters (plan with confidence=True)")
    counts = np.sum([r["counts"] for r in results], axis=0)
    nodata_pixels = sum(r["nodata_pixels"] for r in results)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        _mosaic_cog(task, results, "file", plan, out,
                    scaled(progress, 0.0, 0.5 if confidence is not None else 1.0), "NEAREST")
        if confidence is not None:
            _mosaic_cog(task, results, "confidence", plan, confidence, scaled(progress, 0.5, 1.0), "AVERAGE")
    report(progress, 1.0, "wrote the Cloud-Optimized GeoTIFF")
    model = as_model(args["model"], "cpu")
    by_name = {name: int(n) for name, n in zip(model.class_names, counts)}
    return SceneClassification(Path(out), by_name, plan.height * plan.width, int(nodata_pixels),
                               int(results[0]["stride"]), Path(confidence) if confidence is not None else None)


def _classify_tile(model: Model, sc: Scene, bands, r, c, h, w, stride, codes, batch_size, tta=False, want=False):
    """Classify output tile ``(r, c, h, w)`` of a patch model in ``stride`` blocks; returns
    ``(classes, valid, confidence or None)``, ``(h, w)`` each."""
    pr, pc = model.patch_size
    nbr, nbc = -(-h // stride), -(-w // stride)
    # patch of block (i, j) starts at r + i*stride + stride//2 - pr//2
    r0 = r + stride // 2 - pr // 2
    c0 = c + stride // 2 - pc // 2
    rows = (nbr - 1) * stride + pr
    cols = (nbc - 1) * stride + pc
    data, pvalid = sc.read(bands, r0, c0, rows, cols)
    view = np.lib.stride_tricks.sliding_window_view(data, (pr, pc), axis=(1, 2))[:, ::stride, ::stride]
    patches = view.transpose(1, 2, 0, 3, 4).reshape(nbr * nbc, len(bands), pr, pc)
    pred = np.empty(len(patches), dtype=np.int64)
    prob = np.empty(len(patches), dtype=np.float32)
    for start in range(0, len(patches), batch_size):
        p = model.predict_proba(patches[start:start + batch_size], batch_size=batch_size, tta=tta)
        pred[start:start + batch_size] = p.argmax(1)
        prob[start:start + batch_size] = p.max(1)
    blocks = codes[pred].reshape(nbr, nbc)
    cls = np.repeat(np.repeat(blocks, stride, axis=0), stride, axis=1)[:h, :w].copy()
    conf = np.repeat(np.repeat(prob.reshape(nbr, nbc), stride, axis=0), stride, axis=1)[:h, :w] if want else None
    orow, ocol = r - r0, c - c0
    if orow >= 0 and ocol >= 0 and orow + h <= rows and ocol + w <= cols:
        valid = pvalid[orow:orow + h, ocol:ocol + w]
    else:  # stride larger than the patch: the patch window does not cover the tile
        _, valid = sc.read(bands, r, c, h, w)
    return cls, valid, conf


def _classify_tile_dense(dense, sc: Scene, bands, r, c, h, w, stride, codes, patch_size, want=False):
    """Classify output tile ``(r, c, h, w)`` of a patch model in ``stride`` blocks with a
    :class:`geoml_hub.dense.DensePatch`: one window (the blocks' patches plus the receptive-field
    margin) through the network."""
    pr, pc = patch_size
    m = dense.margin
    nbr, nbc = -(-h // stride), -(-w // stride)
    r0 = r + stride // 2 - pr // 2  # first patch's upper-left pixel
    c0 = c + stride // 2 - pc // 2
    rows = (nbr - 1) * stride + pr
    cols = (nbc - 1) * stride + pc
    data, pvalid = sc.read(bands, r0 - m, c0 - m, rows + 2 * m, cols + 2 * m)
    logits = dense.window_logits(data, nbr, nbc, stride)
    pred = logits.argmax(1).cpu().numpy()
    blocks = codes[pred].reshape(nbr, nbc)
    cls = np.repeat(np.repeat(blocks, stride, axis=0), stride, axis=1)[:h, :w].copy()
    conf = None
    if want:
        prob = logits.softmax(1).max(1).values.cpu().numpy().reshape(nbr, nbc)
        conf = np.repeat(np.repeat(prob, stride, axis=0), stride, axis=1)[:h, :w]
    orow, ocol = r - r0 + m, c - c0 + m
    if orow >= 0 and ocol >= 0 and orow + h <= rows + 2 * m and ocol + w <= cols + 2 * m:
        valid = pvalid[orow:orow + h, ocol:ocol + w]
    else:  # stride larger than the patch: the window does not cover the tile
        _, valid = sc.read(bands, r, c, h, w)
    return cls, valid, conf


def class_names_from_raster(path: PathLike) -> Dict[int, str]:
    """Code → class name from a classification GeoTIFF's ``CLASS_NAMES`` tag (empty if absent)."""
    import rasterio

    with rasterio.open(path) as src:
        tag = src.tags().get("CLASS_NAMES")
    if not tag:
        return {}
    try:
        return {int(k): str(v) for k, v in json.loads(tag).items()}
    except (ValueError, AttributeError):
        return {}
