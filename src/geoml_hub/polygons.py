"""Training polygons (GeoJSON) burnt into a reference label raster on a scene's grid.

The web map saves the polygons a user draws as a GeoJSON FeatureCollection (RFC 7946:
longitude/latitude, EPSG:4326), each feature with a ``class`` property (the class name) and
optionally a ``code`` (its integer label code). :func:`rasterize_polygons` reprojects them to
the scene's CRS and burns them into a label raster on the scene's grid, so polygons feed the
same :func:`geoml_hub.extraction.extract_samples` path as a label raster does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import DataError
from .fileio import PathLike, atomic_path
from .scene import Scene

#: CRS of GeoJSON (RFC 7946, section 4) unless a legacy ``crs`` member names another.
GEOJSON_CRS = "EPSG:4326"


@dataclass
class PolygonLabels:
    """What :func:`rasterize_polygons` wrote.

    Attributes
    ----------
    path : Path
        The label raster (GeoTIFF, uint16, nodata 0, the scene's grid and CRS).
    class_names : dict of int to str
        Label code -> class name.
    pixels : dict of str to int
        Class name -> labelled pixels.
    features : int
        Polygons read.
    """

    path: Path
    class_names: Dict[int, str]
    pixels: Dict[str, int]
    features: int


def parse_polygons(text, source: str) -> Tuple[List[dict], str]:
    """The polygon features of GeoJSON text, each with a non-empty ``class`` property, and their
    CRS (the legacy ``crs`` member, else EPSG:4326).

    Parameters
    ----------
    text : str or bytes
        The GeoJSON document.
    source : str
        What to call it in errors (a file or dataset name).

    Raises
    ------
    DataError
        If it is not GeoJSON, holds no polygon, or a feature lacks its class or has a bad ``code``.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{source}: not a readable GeoJSON file ({exc})") from None
    features = data.get("features") if isinstance(data, dict) and data.get("type") == "FeatureCollection" else None
    if features is None:
        raise DataError(f"{source}: expected a GeoJSON FeatureCollection")
    out = []
    for i, feature in enumerate(features, 1):
        geometry = (feature or {}).get("geometry") or {}
        if geometry.get("type") not in ("Polygon", "MultiPolygon"):
            raise DataError(f"{source}: feature {i} is a {geometry.get('type')}, not a Polygon or MultiPolygon")
        props = feature.get("properties") or {}
        name = str(props.get("class") or "").strip()
        if not name:
            raise DataError(f"{source}: feature {i} has no 'class' property")
        code = props.get("code")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool) or not 1 <= code <= 65535):
            raise DataError(f"{source}: feature {i}: code must be an integer from 1 to 65535, got {code!r}")
        out.append(feature)
    if not out:
        raise DataError(f"{source}: no polygons")
    crs = ((data.get("crs") or {}).get("properties") or {}).get("name") or GEOJSON_CRS
    return out, crs


def read_polygons(path: PathLike) -> Tuple[List[dict], str]:
    """:func:`parse_polygons` of a file.

    Raises
    ------
    DataError
        If the file cannot be read, or as :func:`parse_polygons`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable GeoJSON file ({exc})") from None
    return parse_polygons(text, str(path))


def class_codes(features: List[dict]) -> Dict[str, int]:
    """Class name -> label code: a feature's ``code`` where given (one code per name), else the
    next free code in order of first appearance.

    Raises
    ------
    DataError
        If one class has two codes, or two classes share one.
    """
    codes: Dict[str, int] = {}
    for f in features:
        p = f.get("properties") or {}
        name, code = str(p["class"]).strip(), p.get("code")
        if code is None:
            continue
        if codes.get(name, code) != code:
            raise DataError(f"class {name!r} has two codes, {codes[name]} and {code}")
        codes[name] = code
    if len(set(codes.values())) != len(codes):
        raise DataError(f"two classes share a code: {codes}")
    for f in features:
        name = str(f["properties"]["class"]).strip()
        if name not in codes:
            codes[name] = next(c for c in range(1, 65536) if c not in codes.values())
    return codes


def rasterize_polygons(polygons: PathLike, scene, out_path: PathLike,
                       crs: Optional[str] = None) -> PolygonLabels:
    """Burn training polygons into a label raster on the grid of ``scene``.

    Parameters
    ----------
    polygons : path-like
        GeoJSON FeatureCollection of Polygon/MultiPolygon features with a ``class`` property
        (and optionally an integer ``code``).
    scene : path-like or sequence of path-like
        The scene (one multi-band GeoTIFF or single-band files on one grid); only its grid
        (transform, size, CRS) is used.
    out_path : path-like
        The label GeoTIFF to write (uint16, nodata 0; written to a temporary file, then renamed).
    crs : str, optional
        CRS of the polygons; default: the file's legacy ``crs`` member, else EPSG:4326.

    Returns
    -------
    PolygonLabels

    Raises
    ------
    DataError
        If the file is not valid polygon GeoJSON, or no polygon covers a pixel of the scene.

    Notes
    -----
    A pixel is labelled when its centre falls inside a polygon (``rasterio.features.rasterize``,
    ``all_touched=False``); where polygons overlap, the later feature wins.
    """
    import rasterio
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    polygons = Path(polygons)
    features, file_crs = read_polygons(polygons)
    codes = class_codes(features)
    src_crs = crs or file_crs
    with Scene(scene) as sc:
        if sc.crs is None:
            raise DataError(f"{polygons}: the scene has no CRS, so polygons cannot be placed on it")
        shape, transform, dst_crs = (sc.height, sc.width), sc.transform, sc.crs
    shapes = [(transform_geom(src_crs, dst_crs, f["geometry"]), codes[str(f["properties"]["class"]).strip()])
              for f in features]
    labels = rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="uint16", all_touched=False)
    names = {code: name for name, code in codes.items()}
    pixels = {names[c]: int(n) for c, n in zip(*np.unique(labels[labels > 0], return_counts=True))}
    if not pixels:
        raise DataError(f"{polygons}: no polygon covers a pixel centre of the scene (wrong place or CRS?)")
    profile = {"driver": "GTiff", "height": shape[0], "width": shape[1], "count": 1, "dtype": "uint16",
               "crs": dst_crs, "transform": transform, "nodata": 0, "compress": "deflate"}
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(labels, 1)
            dst.update_tags(1, **{f"class_{c}": n for c, n in names.items()})
    return PolygonLabels(out_path, {c: names[c] for c in sorted(names)}, pixels, len(features))
