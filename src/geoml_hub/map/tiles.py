"""Web tiles, previews and legends of scenes and label rasters (rio-tiler on rasterio).

Scenes are rendered as RGB band combinations with a percentile contrast stretch computed once
per raster and band over the whole raster (so neighbouring tiles match); single-band integer
rasters (reference labels, classifications) are rendered with their colour table, or a
default palette, and are transparent where unlabelled (nodata, 0 or 255 for classifications).
Confidence rasters (single-band float, band description ``confidence``: the probability of the
predicted class written by ``classify --confidence``) are rendered with a red-yellow-green ramp
over [0, 1] (red: the model is unsure), transparent where nodata.
Tiles are 256 x 256 PNGs in the Web Mercator quad tree (EPSG:3857, ``z/x/y`` as in OSM, the
default of Leaflet and OpenLayers), reprojected from the raster's CRS by rio-tiler.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
# imported here, once, not lazily: a first import of rio_tiler from several request threads at
# once fails with a circular-import error
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.colormap import cmap as colormaps
from rio_tiler.io import Reader
from rio_tiler.utils import render

from ..errors import DataError, ParameterError

#: A qualitative palette (matplotlib's tab10/tab20 hues) for label rasters without a colour table.
PALETTE = ["#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#98df8a", "#ff9896", "#ffbb78", "#c5b0d5", "#c49c94"]

#: Band-name hints for presets (lower-case substrings of the band descriptions).
_HINTS = {"blue": ("blue", "b02", "band 1 (blue)"), "green": ("green", "b03"), "red": ("red", "b04"),
          "nir": ("nir", "near infrared", "b08")}

RASTER_SUFFIXES = (".tif", ".tiff", ".gtif")
#: rio-tiler colour map of confidence rasters: 0 red (unsure), 0.5 yellow, 1 green (sure).
CONFIDENCE_RAMP = "rdylgn"


def _hex(rgb: Sequence[int]) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb[:3])


def _rgba(color: str) -> Tuple[int, int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16), 255


def presets(band_names: Sequence[str], count: int) -> Dict[str, List[int]]:
    """True-colour and false-colour (NIR, red, green) band combinations of a scene, 1-based.

    From the band descriptions where they name the bands (e.g. ``"ETM+ band 3 (red)"``), else
    by band count: 13 bands = Sentinel-2 in EuroSAT order (B04, B03, B02 / B08, B04, B03), 4 or
    more = blue, green, red, NIR as bands 1-4 (Landsat 4-7 order). Fewer than 3 bands: the first
    band as grey.
    """
    names = [str(n or "").lower() for n in band_names]
    found: Dict[str, int] = {}
    for key, hints in _HINTS.items():
        for i, n in enumerate(names):
            if any(h in n for h in hints) and not (key == "red" and "infrared" in n):
                found.setdefault(key, i + 1)
    if {"red", "green", "blue"} <= set(found):
        out = {"true colour": [found["red"], found["green"], found["blue"]]}
        if "nir" in found:
            out["false colour"] = [found["nir"], found["red"], found["green"]]
        return out
    if count == 13:
        return {"true colour": [4, 3, 2], "false colour": [8, 4, 3]}
    if count >= 4:
        return {"true colour": [3, 2, 1], "false colour": [4, 3, 2]}
    if count == 3:
        return {"true colour": [1, 2, 3]}
    return {"grey": [1, 1, 1]}


def raster_info(path: Path, dataset: str) -> Dict:
    """What the map needs to know of a raster: kind (``scene`` or ``labels``), bands, bounds in
    longitude/latitude, presets.

    Raises
    ------
    DataError
        If the file is not a georeferenced raster.
    """
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise DataError(f"{dataset}: the raster has no CRS, so it cannot be placed on the map")
            bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
            names = [d or "" for d in src.descriptions]
            integer = np.dtype(src.dtypes[0]).kind in "iu"
            kind = "labels" if src.count == 1 and integer else "scene"
            if src.count == 1 and not integer and (names[0] or "").lower() == "confidence":
                kind = "confidence"
            info = {"dataset": dataset, "name": path.stem, "kind": kind, "bands": src.count,
                    "band_names": [n or f"band {i}" for i, n in enumerate(names, 1)],
                    "bounds": [round(float(b), 7) for b in bounds], "dtype": src.dtypes[0],
                    "crs": src.crs.to_string(), "size": [src.width, src.height]}
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{dataset}: not a readable raster ({exc})") from None
    if kind == "scene":
        info["presets"] = presets(names, info["bands"])
    return info


#: Rasters at most this many pixels on both sides are image patches (e.g. EuroSAT's 64 x 64),
#: not scenes: they are training samples, and too small to be useful as map layers.
PATCH_EDGE = 128


def list_rasters(roots: Dict[str, Path], limit: int = 500) -> List[Dict]:
    """Rasters of the data roots as map layers (:func:`raster_info`), without image patches
    (at most :data:`PATCH_EDGE` pixels on both sides) and without files that are not
    georeferenced rasters."""
    out: List[Dict] = []
    for root_name, root in sorted(roots.items()):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for f in sorted(f for f in filenames if f.lower().endswith(RASTER_SUFFIXES)):
                path = Path(dirpath) / f
                try:
                    info = raster_info(path, f"{root_name}/{path.relative_to(root).as_posix()}")
                except DataError:
                    continue
                if max(info["size"]) <= PATCH_EDGE:
                    continue
                out.append(info)
                if len(out) >= limit:
                    return out
    return out


def layer_from_stac(item: Dict) -> Optional[Dict]:
    """The map layer (as :func:`raster_info` gives it) of a STAC item of the WPS's catalogue
    (:mod:`geoml_hub.catalog`): bounds from its WGS 84 bbox, the grid from ``proj:``, band names,
    data type and the kind from its asset's ``eo:bands`` and ``raster:bands``; ``None`` for an item
    that is not one raster of a data root (or an image patch).

    Parameters
    ----------
    item : dict
        A STAC item as JSON.
    """
    props = item.get("properties", {})
    dataset = props.get("geoml:dataset", "")
    assets = [a for a in item.get("assets", {}).values() if a.get("raster:bands")]
    if len(assets) != 1 or not item.get("bbox") or not dataset or dataset.startswith(("jobs/", "results/")):
        return None
    asset = assets[0]
    bands = asset["raster:bands"]
    descriptions = [b.get("description") or "" for b in asset.get("eo:bands", [{}] * len(bands))]
    shape = props.get("proj:shape") or [0, 0]
    if max(shape) <= PATCH_EDGE:
        return None
    dtype = bands[0].get("data_type", "")
    kind = "labels" if len(bands) == 1 and np.dtype(dtype).kind in "iu" else "scene"
    if len(bands) == 1 and np.dtype(dtype).kind == "f" and descriptions[0].lower() == "confidence":
        kind = "confidence"  # as raster_info says
    info = {"dataset": dataset, "name": dataset.rsplit("/", 1)[-1].rsplit(".", 1)[0], "kind": kind,
            "bands": len(bands), "band_names": [n or f"band {i}" for i, n in enumerate(descriptions, 1)],
            "bounds": [round(float(b), 7) for b in item["bbox"]], "dtype": dtype,
            "crs": props.get("proj:code") or "", "size": [shape[1], shape[0]]}
    if kind == "scene":
        info["presets"] = presets(descriptions, len(bands))
    return info


@lru_cache(maxsize=256)
def _stretch(path: str, mtime: float, bands: Tuple[int, ...], low: float, high: float) -> Tuple[Tuple[float, float], ...]:
    """Per-band percentile range over the whole raster (its overview when it has one)."""

    with Reader(path) as r:
        stats = r.statistics(indexes=bands, percentiles=[low, high], max_size=1024)
    out = []
    for b in bands:
        # rio-tiler names the percentiles by value (percentile_2, percentile_98), in the order asked
        lo, hi = [v for k, v in stats[f"b{b}"].model_dump().items() if k.startswith("percentile_")][:2]
        out.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return tuple(out)


def parse_bands(text: Optional[str], count: int) -> Tuple[int, ...]:
    """``"3,2,1"`` -> ``(3, 2, 1)``; one band gives grey.

    Raises
    ------
    ParameterError
        For anything but 1 or 3 band numbers from 1 to ``count``.
    """
    try:
        bands = tuple(int(b) for b in str(text).split(",") if b.strip())
    except ValueError:
        raise ParameterError(f"bands must be band numbers such as 3,2,1, got {text!r}") from None
    if len(bands) == 1:
        bands = bands * 3
    if len(bands) != 3 or not all(1 <= b <= count for b in bands):
        raise ParameterError(f"bands must be 1 or 3 band numbers from 1 to {count}, got {text!r}")
    return bands


def parse_stretch(text: Optional[str]) -> Tuple[float, float]:
    """``"2,98"`` -> ``(2.0, 98.0)``.

    Raises
    ------
    ParameterError
        Unless 0 <= low < high <= 100.
    """
    try:
        low, high = (float(v) for v in str(text or "2,98").split(","))
    except ValueError:
        raise ParameterError(f"stretch must be two percentiles such as 2,98, got {text!r}") from None
    if not 0 <= low < high <= 100:
        raise ParameterError(f"stretch must be two percentiles with 0 <= low < high <= 100, got {text!r}")
    return low, high


def category_names(path: Path) -> Dict[int, str]:
    """Code → name from GDAL's category names of band 1 (``<CategoryNames>`` in the raster's
    ``.aux.xml``, as GDAL and QGIS write them; the n-th name is code n), empty names left out."""
    aux = Path(str(path) + ".aux.xml")
    if not aux.is_file():
        return {}
    try:
        root = ET.parse(aux).getroot()
    except (ET.ParseError, OSError):
        return {}
    for band in root.iter("PAMRasterBand"):
        if band.get("band", "1") == "1":
            cats = band.find("CategoryNames")
            if cats is not None:
                return {i: (c.text or "").strip() for i, c in enumerate(cats.findall("Category"))
                        if (c.text or "").strip()}
    return {}


def class_table(path: Path) -> List[Dict]:
    """Classes of a label raster: code, name (the CLASS_NAMES tag of a classification, of the
    raster or its band 1, else GDAL's category names (:func:`category_names`), else the code) and
    colour (the raster's colour table, else :data:`PALETTE`), for the codes present."""
    with rasterio.open(path) as src:
        data = src.read(1, out_shape=(min(src.height, 2048), min(src.width, 2048)), resampling=Resampling.nearest)
        nodata = src.nodata
        tags = dict(src.tags(1))
        tags.update(src.tags())
        try:
            cmap = src.colormap(1)
        except ValueError:
            cmap = None
    names = category_names(path)
    if tags.get("CLASS_NAMES"):
        names.update({int(k): v for k, v in json.loads(tags["CLASS_NAMES"]).items()})
    present = {int(c) for c in np.unique(data) if c != nodata and c != 0 and (nodata is not None or c != 255)}
    codes = sorted(present | set(names))
    out = []
    for i, code in enumerate(codes):
        color = _hex(cmap[code]) if cmap and code in cmap else PALETTE[i % len(PALETTE)]
        out.append({"code": code, "name": names.get(code, str(code)), "color": color})
    return out


def render_tile(path: Path, z: int, x: int, y: int, kind: str, bands: Sequence[int] = (1, 1, 1),
                stretch: Tuple[float, float] = (2.0, 98.0), size: int = 256) -> Optional[bytes]:
    """A PNG tile (``None`` when the tile is outside the raster).

    Parameters
    ----------
    path : Path
        The raster.
    z, x, y : int
        Web Mercator tile (zoom, column, row).
    kind : {'scene', 'labels', 'confidence'}
        RGB composite with a percentile stretch, classes with colours, or a confidence ramp.
    bands : sequence of 3 int
        1-based bands for red, green, blue (scenes).
    stretch : (float, float)
        Percentiles of each band mapped to 0 and 255 (scenes).
    """
    with Reader(str(path)) as r:
        if not r.tile_exists(x, y, z):
            return None
        try:
            if kind in ("labels", "confidence"):
                img = r.tile(x, y, z, indexes=(1,), tilesize=size, resampling_method="nearest",
                             reproject_method="nearest")
            else:
                img = r.tile(x, y, z, indexes=tuple(bands), tilesize=size, resampling_method="bilinear",
                             reproject_method="bilinear")
        except TileOutsideBounds:
            return None
    return _png(img, path, kind, bands, stretch)


@lru_cache(maxsize=128)
def _classes_cached(path: str, mtime: float) -> Tuple[Dict, ...]:
    return tuple(class_table(Path(path)))


def legend(path: Path) -> List[Dict]:
    """:func:`class_table` of ``path``, computed once per version of the file."""
    return list(_classes_cached(str(path), path.stat().st_mtime))


@lru_cache(maxsize=256)
def _info_cached(path: str, mtime: float, dataset: str) -> Dict:
    return raster_info(Path(path), dataset)


def layer_info(path: Path, dataset: str) -> Dict:
    """:func:`raster_info` of ``path``, read once per version of the file (every tile request
    needs it, and it opens the raster and reprojects its bounds). Do not modify the result."""
    return _info_cached(str(path), path.stat().st_mtime, dataset)


def _png(img, path: Path, kind: str, bands: Sequence[int], stretch: Tuple[float, float]) -> bytes:
    """A rio-tiler ``ImageData`` as PNG: classes in their colours (transparent elsewhere), or the
    bands stretched from the raster's percentiles to 0..255."""
    if kind == "labels":
        data = img.data[0]
        rgba = np.zeros((4,) + data.shape, dtype=np.uint8)
        for c in legend(path):
            rgba[:, (data == c["code"]) & (img.mask > 0)] = np.array(_rgba(c["color"]), dtype=np.uint8)[:, None]
        return render(rgba[:3], mask=rgba[3], img_format="PNG")
    if kind == "confidence":
        data = img.data[0].astype(np.float64)
        valid = (img.mask > 0) & np.isfinite(data) & (data >= 0)
        level = np.round(np.clip(np.nan_to_num(data), 0.0, 1.0) * 255).astype(np.uint8)
        return render(level[None], mask=np.where(valid, 255, 0).astype(np.uint8), img_format="PNG",
                      colormap=colormaps.get(CONFIDENCE_RAMP))
    img.rescale(in_range=_stretch(str(path), path.stat().st_mtime, tuple(bands), *stretch), out_range=((0, 255),))
    return img.render(img_format="PNG")


def render_preview(path: Path, kind: str, bands: Sequence[int] = (1, 1, 1),
                   stretch: Tuple[float, float] = (2.0, 98.0), max_size: int = 512) -> bytes:
    """The whole raster as one PNG (at most ``max_size`` pixels on a side), in its own CRS."""
    with Reader(str(path)) as r:
        if kind in ("labels", "confidence"):
            img = r.preview(indexes=(1,), max_size=max_size, resampling_method="nearest")
        else:
            img = r.preview(indexes=tuple(bands), max_size=max_size)
    return _png(img, path, kind, bands, stretch)
