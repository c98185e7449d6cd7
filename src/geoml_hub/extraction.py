"""Training samples from a labelled scene, and spatial splits of labelled regions.

:func:`extract_samples` turns the labelled pixels of a reference raster plus a scene into
a training-sample tree, so scenes feed the same balance → train path as patch trees:
one class directory per label code, one ``.npy`` container per *region* (a connected
group of same-class labelled pixels, 8-connectivity — in practice one digitised polygon),
holding a ``(patch, patch)`` window centred on each labelled pixel.

:func:`split_regions` splits the regions of a reference spatially — whole regions to one
side, never random pixels, as iota2 does — into a training and a test reference raster.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from .errors import DataError, ParameterError
from .fileio import PathLike, atomic_path, write_csv, write_json
from .progress import ProgressCallback, report
from .samples import CLASSES_FILE
from .scene import Scene, _open, check_same_grid

REGIONS_HEADER = ("region", "code", "class", "pixels", "samples", "file", "row_min", "row_max", "col_min", "col_max")


def read_reference(reference: PathLike, reference_nodata: Optional[float] = 0) -> Tuple[np.ndarray, np.ndarray, dict]:
    """Read a reference raster's first band.

    Returns
    -------
    codes : numpy.ndarray
        ``(rows, cols)`` int64 label codes (0 where unlabelled).
    labelled : numpy.ndarray
        ``(rows, cols)`` bool.
    profile : dict
        The raster's rasterio profile.

    Raises
    ------
    DataError
        If the file is unreadable, or a labelled value is not a whole number.
    """
    with _open(reference) as src:
        arr = src.read(1)
        profile = dict(src.profile)
        unlabelled = reference_nodata if reference_nodata is not None else src.nodata
    labelled = np.ones(arr.shape, dtype=bool)
    if unlabelled is not None:
        labelled &= arr != unlabelled
    if arr.dtype.kind == "f":
        labelled &= ~np.isnan(arr)
        vals = arr[labelled]
        if not np.all(vals == np.round(vals)):
            raise DataError(f"{reference}: labels must be whole numbers")
    codes = np.where(labelled, arr, 0).astype(np.int64)
    return codes, labelled, profile


def label_regions(codes: np.ndarray, labelled: np.ndarray) -> Tuple[np.ndarray, List[Dict]]:
    """Connected regions of same-class labelled pixels (8-connectivity).

    Returns
    -------
    regions : numpy.ndarray
        ``(rows, cols)`` int32 region id (1..R), 0 where unlabelled.
    table : list of dict
        Per region: ``region``, ``code``, ``pixels`` and its bounding box in pixels
        (``row_min``, ``row_max``, ``col_min``, ``col_max``, inclusive).
    """
    from scipy import ndimage

    regions = np.zeros(codes.shape, dtype=np.int32)
    table: List[Dict] = []
    next_id = 1
    for code in np.unique(codes[labelled]):
        lab, n = ndimage.label((codes == code) & labelled, structure=np.ones((3, 3), dtype=bool))
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            mask = lab[sl] == k
            regions[sl][mask] = next_id
            table.append({"region": next_id, "code": int(code), "pixels": int(mask.sum()),
                          "row_min": sl[0].start, "row_max": sl[0].stop - 1,
                          "col_min": sl[1].start, "col_max": sl[1].stop - 1})
            next_id += 1
    return regions, table


def _dir_name(name: str) -> str:
    clean = re.sub(r"[^\w.+-]+", "_", str(name)).strip("._")
    return clean or "class"


@dataclass
class ExtractResult:
    """What :func:`extract_samples` wrote."""

    root: Path
    counts: Dict[str, int]  # samples per class name
    regions: List[Dict]
    skipped_nodata: int


def extract_samples(scene, reference: PathLike, out_dir: PathLike, patch_size: int = 1,
                    reference_nodata: Optional[float] = 0, class_names: Optional[Mapping[int, str]] = None,
                    ignore_crs_name: bool = False, progress: Optional[ProgressCallback] = None) -> ExtractResult:
    """Turn the labelled pixels of a scene into a training-sample tree.

    Parameters
    ----------
    scene : path-like or sequence of path-like
        One multi-band GeoTIFF or single-band files on one grid.
    reference : path-like
        Label raster on the scene's grid; value ``reference_nodata`` is unlabelled.
    out_dir : path-like
        The tree to write: ``<class>/region_<id>.npy`` of shape
        ``(pixels, bands, patch_size, patch_size)`` in the scene's dtype, plus
        ``classes.json`` (class name → label code) and ``regions.csv``. The tree is built
        in a temporary directory and renamed into place; an existing tree is replaced.
    patch_size : int
        Window edge in pixels, odd (1 = pixel samples). Windows past the scene edge
        repeat the edge pixels.
    reference_nodata : float, optional
        Unlabelled value (default 0).
    class_names : mapping, optional
        Label code → class name (directory name); default: the code itself.
    ignore_crs_name : bool
        Accept a reference whose CRS differs from the scene's only in name.

    Returns
    -------
    ExtractResult

    Raises
    ------
    ParameterError
        If ``patch_size`` is not a positive odd number.
    GridMismatchError
        If the reference is not on the scene's grid.
    DataError
        If files are unreadable or the reference has no labelled pixel.
    """
    if patch_size < 1 or patch_size % 2 == 0:
        raise ParameterError(f"patch size must be a positive odd number of pixels, got {patch_size}")
    out = Path(out_dir)
    codes, labelled, _ = read_reference(reference, reference_nodata)
    if not labelled.any():
        raise DataError(f"{reference}: no labelled pixel (unlabelled value {reference_nodata})")
    names = {int(k): str(v) for k, v in (class_names or {}).items()}
    half = patch_size // 2
    with Scene(scene) as sc, _open(reference) as ref_src:
        check_same_grid(sc.dataset, ref_src, f"scene {sc.paths[0]}", f"reference {reference}", ignore_crs_name)
        regions, table = label_regions(codes, labelled)
        bands = list(range(1, sc.count + 1))
        dtype = np.dtype(sc.profile["dtype"])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            counts: Dict[str, int] = {}
            class_codes: Dict[str, int] = {}
            skipped = 0
            for k, reg in enumerate(table):
                r0, r1, c0, c1 = reg["row_min"], reg["row_max"], reg["col_min"], reg["col_max"]
                data, valid = sc.read(bands, r0 - half, c0 - half, r1 - r0 + 1 + 2 * half, c1 - c0 + 1 + 2 * half,
                                      dtype=dtype)
                rr, cc = np.nonzero(regions[r0:r1 + 1, c0:c1 + 1] == reg["region"])
                ok = valid[rr + half, cc + half]
                skipped += int((~ok).sum())
                rr, cc = rr[ok], cc[ok]
                name = names.get(reg["code"], str(reg["code"]))
                dname = _dir_name(name)
                if class_codes.setdefault(dname, reg["code"]) != reg["code"]:
                    raise ParameterError(f"class name {name!r} given to two codes")
                reg.update({"class": dname, "samples": int(len(rr)), "file": ""})
                if len(rr) == 0:
                    continue
                windows = np.lib.stride_tricks.sliding_window_view(data, (patch_size, patch_size), axis=(1, 2))
                patches = np.ascontiguousarray(windows[:, rr, cc].transpose(1, 0, 2, 3))
                rel = f"{dname}/region_{reg['region']:05d}.npy"
                (tmp / dname).mkdir(exist_ok=True)
                np.save(tmp / rel, patches)
                reg["file"] = rel
                counts[dname] = counts.get(dname, 0) + len(rr)
                report(progress, (k + 1) / len(table), f"extracted region {k + 1}/{len(table)}")
            if not counts:
                raise DataError(f"{reference}: every labelled pixel is nodata in the scene")
            write_json(tmp / CLASSES_FILE, {n: class_codes[n] for n in sorted(counts, key=class_codes.get)})
            write_csv(tmp / "regions.csv", REGIONS_HEADER, ([r.get(h, "") for h in REGIONS_HEADER] for r in table))
            _replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ExtractResult(out, counts, table, skipped)


def _replace_dir(new: Path, dest: Path) -> None:
    """Put directory ``new`` at ``dest``, replacing an existing one with two renames."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


@dataclass
class RegionSplit:
    """A spatial split of a reference raster's regions."""

    train_reference: Path
    test_reference: Path
    train_regions: List[int]
    test_regions: List[int]
    table: List[Dict]


def split_regions(reference: PathLike, out_dir: PathLike, test_fraction: float = 0.3, seed: int = 0,
                  reference_nodata: Optional[float] = 0) -> RegionSplit:
    """Split the labelled regions of a reference raster into training and test rasters.

    Per class, regions are visited in a seeded random order and put on the test side
    while the test side has less than ``test_fraction`` of the class's pixels, skipping a
    region that would overshoot that share by half; the largest-remaining region always
    stays on the training side. A class with one region has no test pixels (the summary
    says so). Whole regions go to one side: no pixel of a training region is tested.

    Writes ``reference_train.tif`` and ``reference_test.tif`` (the reference's grid and
    dtype; the other side's pixels set to unlabelled) and ``regions.csv``.

    Raises
    ------
    ParameterError
        If ``test_fraction`` is not in (0, 1).
    """
    import rasterio

    if not 0 < test_fraction < 1:
        raise ParameterError(f"test fraction must be in (0, 1), got {test_fraction}")
    out = Path(out_dir)
    codes, labelled, profile = read_reference(reference, reference_nodata)
    regions, table = label_regions(codes, labelled)
    rng = np.random.default_rng(seed)
    test_ids: List[int] = []
    for code in sorted({r["code"] for r in table}):
        regs = [r for r in table if r["code"] == code]
        if len(regs) < 2:
            continue
        total = sum(r["pixels"] for r in regs)
        target = test_fraction * total
        keep_train = max(regs, key=lambda r: r["pixels"])["region"]
        taken = 0
        for i in rng.permutation(len(regs)):
            reg = regs[i]
            if reg["region"] == keep_train or taken >= target:
                continue
            if taken + reg["pixels"] <= 1.5 * target or taken == 0 and reg["pixels"] <= total / 2:
                test_ids.append(reg["region"])
                taken += reg["pixels"]
        if taken == 0:  # every region too big: test the smallest one but the kept one
            test_ids.append(min((r for r in regs if r["region"] != keep_train), key=lambda r: r["pixels"])["region"])
    test_mask = np.isin(regions, test_ids)
    with _open(reference) as src:
        raw = src.read(1)
    fill = reference_nodata if reference_nodata is not None else (profile.get("nodata") or 0)
    paths = {}
    for side, mask in (("train", labelled & ~test_mask), ("test", test_mask)):
        arr = np.where(mask, raw, np.array(fill, dtype=raw.dtype))
        paths[side] = out / f"reference_{side}.tif"
        prof = {k: v for k, v in profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
        with atomic_path(paths[side]) as tmp:
            with rasterio.open(tmp, "w", **prof) as dst:
                dst.write(arr, 1)
    for r in table:
        r["side"] = "test" if r["region"] in test_ids else "train"
    write_csv(out / "regions.csv", ["region", "code", "pixels", "side", "row_min", "row_max", "col_min", "col_max"],
              ([r[k] for k in ("region", "code", "pixels", "side", "row_min", "row_max", "col_min", "col_max")]
               for r in table))
    train_ids = [r["region"] for r in table if r["side"] == "train"]
    return RegionSplit(paths["train"], paths["test"], train_ids, sorted(test_ids), table)
