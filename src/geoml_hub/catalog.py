"""A static STAC catalogue of the data roots and the published results (pystac, rasterio).

The catalogue (STAC 1.1, written by pystac as a *self-contained* static catalogue) holds:

* one **collection per data root** (id = the root's name, e.g. ``data``) with one **item per
  raster** (``.tif``, ``.tiff``, ``.gtif``) that is not an image patch: its geometry and bbox
  in WGS 84, the projection extension (``proj:code``, ``proj:shape``, ``proj:transform``,
  ``proj:bbox``) and, on its one asset, ``eo:bands`` (band names from the file's band
  descriptions) and ``raster:bands`` (data type, nodata, scale, offset);
* one **child collection per sample tree** found in a data root (a directory whose
  sub-directories hold only sample containers, :mod:`geoml_hub.samples`), with its class
  counts as the label extension's ``label:classes`` / ``label:overviews`` summaries and the union of its patches'
  footprints as its extent; the patches themselves are not items (hundreds of 64 x 64 chips);
* the **results collection** (id ``results``): one item per published job, with every output
  file as an asset (rasters with their bands and projection, reports as ``metadata``).

**Asset roles** (the rule): a raster whose file name contains ``confidence`` is
``confidence``; one whose name contains ``classification`` or ``predicted`` is
``classification``; any other one-band integer raster is a label raster, ``labels`` (the map's
rule for its colour table); everything else is a scene, ``data``. Non-raster outputs of a job
are ``metadata``.

**Datetime**: Landsat scene identifiers (pre-collection ``LE7PPPRRRYYYYDDD...``, e.g.
``LE70220491999322EDC01`` = path 22, row 49, day 322 of 1999) give the acquisition date, and
``platform``/``instruments``. Other files carry no acquisition date that can be trusted, so
their item's ``datetime`` is the file's modification time and ``geoml:datetime_source`` says
``file-mtime`` (a result's is the time it was written).

**Incremental**: a JSON cache (``path -> size, mtime, item``) lives next to the catalogue;
a raster whose size and modification time did not change is not opened again.

Every item has ``geoml:dataset``, the name the WPS takes as a dataset input
(``data/landsat7_chiapas/training_data.gtif``, ``jobs/<id>/<file>``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from .errors import DataError
from .fileio import PathLike, write_text
from .progress import ProgressCallback, report
from .samples import CLASSES_FILE, CONTAINER_SUFFIXES, container_info

#: File suffixes of the rasters catalogued.
RASTER_SUFFIXES = (".tif", ".tiff", ".gtif")
#: Rasters at most this many pixels on both sides are image patches (EuroSAT's 64 x 64), not
#: scenes (the same rule as the map's layer list, :data:`geoml_hub.map.tiles.PATCH_EDGE`).
PATCH_EDGE = 128
CATALOG_ID = "geoml-hub"
LABEL_SCHEMA = "https://stac-extensions.github.io/label/v1.0.1/schema.json"
RESULTS = "results"
#: The GeoTIFF media type.
GEOTIFF = pystac.MediaType.GEOTIFF
_LANDSAT = re.compile(r"^L([ETCOM])0?(\d)(\d{3})(\d{3})(\d{4})(\d{3})[A-Z]{3}\d{2}")
_LANDSAT_PLATFORM = {"4": "landsat-4", "5": "landsat-5", "7": "landsat-7", "8": "landsat-8", "9": "landsat-9"}
_LANDSAT_INSTRUMENT = {"E": "etm+", "T": "tm", "C": "oli", "O": "oli", "M": "mss"}
_MEDIA = {".json": pystac.MediaType.JSON, ".html": pystac.MediaType.HTML, ".png": pystac.MediaType.PNG,
          ".csv": "text/csv", ".txt": pystac.MediaType.TEXT, ".xml": pystac.MediaType.XML,
          ".geojson": pystac.MediaType.GEOJSON, ".pt": "application/octet-stream"}

#: ``href_for(kind, name, rel, path)``: the href of a file, relative to the catalogue's root
#: directory or absolute; ``kind`` is ``"data"`` (``name`` = root name) or ``"result"``
#: (``name`` = job id), ``rel`` the file's path under it (POSIX), ``path`` the file.
HrefFor = Callable[[str, str, str, Path], str]


# -- one raster ------------------------------------------------------------------------------
def landsat_scene(name: str) -> Optional[Dict]:
    """Acquisition date, platform and instrument from a pre-collection Landsat scene identifier.

    Parameters
    ----------
    name : str
        A file name such as ``LE70220491999322EDC01_stack.gtif`` (``L`` + sensor + satellite +
        WRS-2 path (3 digits) + row (3) + year (4) + day of year (3) + station (3) + version (2)).

    Returns
    -------
    dict or None
        ``{"datetime": datetime (UTC, midnight), "platform": "landsat-7", "instruments": ["etm+"],
        "path": 22, "row": 49}``, or ``None`` when ``name`` is not such an identifier.
    """
    m = _LANDSAT.match(name)
    if not m:
        return None
    sensor, sat, path, row, year, doy = m.groups()
    try:
        day = dt.datetime(int(year), 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=int(doy) - 1)
    except ValueError:
        return None
    if not 1 <= int(doy) <= 366 or day.year != int(year):
        return None
    return {"datetime": day, "platform": _LANDSAT_PLATFORM.get(sat, f"landsat-{sat}"),
            "instruments": [_LANDSAT_INSTRUMENT.get(sensor, sensor.lower())], "path": int(path), "row": int(row)}


def asset_role(name: str, count: int, dtype: str) -> str:
    """The asset role of a raster (the rule of the module docstring).

    Parameters
    ----------
    name : str
        File name.
    count : int
        Number of bands.
    dtype : str
        NumPy name of the bands' data type (``uint8``, ``int16``, ``float32``, ...).

    Returns
    -------
    str
        ``confidence``, ``classification``, ``labels`` or ``data``.
    """
    low = name.lower()
    if "confidence" in low:
        return "confidence"
    if "classification" in low or "predicted" in low:
        return "classification"
    if count == 1 and (dtype.startswith("uint") or dtype.startswith("int")):
        return "labels"
    return "data"


def _footprint(crs, bounds, points: int = 21) -> Tuple[List[float], Dict]:
    """bbox and polygon in WGS 84 of ``bounds`` (left, bottom, right, top in ``crs``), with
    ``points`` points per edge so that the reprojected edges follow their curve."""
    from rasterio.warp import transform, transform_bounds

    left, bottom, right, top = bounds
    xs, ys = [], []
    for i in range(points):  # counter-clockwise, as GeoJSON's right-hand rule asks
        f = i / (points - 1)
        xs.append(left + f * (right - left)); ys.append(bottom)
    for i in range(1, points):
        f = i / (points - 1)
        xs.append(right); ys.append(bottom + f * (top - bottom))
    for i in range(1, points):
        f = i / (points - 1)
        xs.append(right - f * (right - left)); ys.append(top)
    for i in range(1, points):
        f = i / (points - 1)
        xs.append(left); ys.append(top - f * (top - bottom))
    lons, lats = transform(crs, "EPSG:4326", xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lons, lats)]
    ring[-1] = ring[0]
    bbox = [round(float(b), 7) for b in transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=points)]
    return bbox, {"type": "Polygon", "coordinates": [ring]}


def read_raster(path: PathLike) -> Dict:
    """What the catalogue needs of a raster, from one ``rasterio.open``.

    Parameters
    ----------
    path : path-like
        A georeferenced raster.

    Returns
    -------
    dict
        ``bbox`` (WGS 84, degrees), ``geometry`` (GeoJSON polygon, WGS 84), ``epsg`` (int or
        None), ``wkt2`` (when there is no EPSG code), ``shape`` ``[rows, cols]``, ``transform``
        (6 affine coefficients), ``proj_bbox`` (in the raster's CRS), ``count``, ``dtype``,
        ``descriptions``, ``nodata``, ``scales``, ``offsets``, ``tags`` (the dataset's).

    Raises
    ------
    DataError
        If the file is not a readable raster or has no CRS.
    """
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise DataError(f"{path}: the raster has no CRS")
            bbox, geometry = _footprint(src.crs, tuple(src.bounds))
            epsg = src.crs.to_epsg()
            return {"bbox": bbox, "geometry": geometry, "epsg": epsg, "wkt2": None if epsg else src.crs.to_wkt(),
                    "shape": [src.height, src.width], "transform": list(src.transform)[:6],
                    "proj_bbox": [float(b) for b in src.bounds], "count": src.count, "dtype": src.dtypes[0],
                    "descriptions": list(src.descriptions), "nodata": src.nodata, "scales": list(src.scales),
                    "offsets": list(src.offsets), "tags": src.tags()}
    except RasterioError as exc:
        raise DataError(f"{path}: not a readable raster ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None


def _raster_asset(info: Dict, href: str, role: str, title: str) -> pystac.Asset:
    asset = pystac.Asset(href=href, media_type=GEOTIFF, title=title, roles=[role])
    names = [d or f"band {i}" for i, d in enumerate(info["descriptions"], 1)]
    EOExtension.ext(asset, add_if_missing=False).bands = [Band.create(name=n, description=d or None)
                                                           for n, d in zip(names, info["descriptions"])]
    nodata = info["nodata"]
    RasterExtension.ext(asset, add_if_missing=False).bands = [
        RasterBand.create(data_type=DataType(info["dtype"]), nodata=nodata,
                          scale=s if s != 1.0 else None, offset=o if o != 0.0 else None)
        for s, o in zip(info["scales"], info["offsets"])]
    return asset


def raster_item(info: Dict, item_id: str, href: str, name: str, dataset: str, mtime: float,
                role: Optional[str] = None) -> pystac.Item:
    """The STAC item of one raster (see the module docstring).

    Parameters
    ----------
    info : dict
        :func:`read_raster`'s answer.
    item_id : str
        Unique in its collection.
    href : str
        Href of the file (its one asset, ``data``... keyed by role).
    name : str
        File name (for the role and the Landsat date).
    dataset : str
        The WPS dataset name (``geoml:dataset``).
    mtime : float
        Modification time (seconds since the epoch), the datetime of a file without a date.
    role : str, optional
        Overrides :func:`asset_role`.

    Returns
    -------
    pystac.Item
    """
    role = role or asset_role(name, info["count"], info["dtype"])
    props: Dict = {"geoml:dataset": dataset, "geoml:role": role}
    scene = landsat_scene(name)
    if scene:
        when = scene["datetime"]
        props.update({"platform": scene["platform"], "instruments": scene["instruments"],
                      "geoml:datetime_source": "landsat-scene-id", "landsat:wrs_path": scene["path"],
                      "landsat:wrs_row": scene["row"]})
    else:
        when = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).replace(microsecond=0)
        props["geoml:datetime_source"] = "file-mtime"
    item = pystac.Item(id=item_id, geometry=info["geometry"], bbox=info["bbox"], datetime=when, properties=props)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(epsg=info["epsg"], wkt2=info["wkt2"], shape=info["shape"], transform=info["transform"],
               bbox=info["proj_bbox"])
    EOExtension.add_to(item)
    RasterExtension.add_to(item)
    item.add_asset(role, _raster_asset(info, href, role, name))
    return item


# -- the cache -------------------------------------------------------------------------------
class Cache:
    """``path -> {size, mtime_ns, ...}`` records kept in a JSON file; a record is reused only
    while the file's size and modification time are unchanged.

    Parameters
    ----------
    path : path-like, optional
        The JSON file (none: nothing is kept).
    """

    def __init__(self, path: Optional[PathLike] = None):
        self.path = Path(path) if path else None
        self.old: Dict[str, Dict] = {}
        if self.path and self.path.is_file():
            try:
                self.old = json.loads(self.path.read_text()).get("files", {})
            except (OSError, ValueError):
                self.old = {}
        self.new: Dict[str, Dict] = {}
        self.reads = 0

    def get(self, path: Path, compute: Callable[[], Dict]) -> Dict:
        """The record of ``path``: the cached one if the file is unchanged, else ``compute()``."""
        st = path.stat()
        key = str(path)
        rec = self.new.get(key) or self.old.get(key)
        if not (rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns):
            self.reads += 1
            rec = dict(compute(), size=st.st_size, mtime_ns=st.st_mtime_ns)
        self.new[key] = rec
        return rec

    def save(self) -> None:
        """Write the records used in this build (files gone are dropped)."""
        if self.path:
            write_text(self.path, json.dumps({"files": self.new}) + "\n")


# -- data roots ------------------------------------------------------------------------------
def is_sample_tree(folder: Path, cache: Optional[Cache] = None) -> bool:
    """Whether ``folder`` is a training-sample tree: it has ``classes.json``, or at least two
    sub-directories, each holding sample containers and no further directory; where the
    containers are GeoTIFFs, the first one must be an image patch (at most :data:`PATCH_EDGE`
    pixels on both sides), so that a folder of scenes sorted into sub-folders stays scenes.

    Parameters
    ----------
    folder : Path
    cache : Cache, optional
        Where the first GeoTIFF's grid is looked up (read with rasterio if not there).
    """
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        return False
    first_tif = None
    for d in subdirs:
        entries = sorted(p for p in d.iterdir() if not p.name.startswith("."))
        if any(p.is_dir() for p in entries) or not any(p.suffix.lower() in CONTAINER_SUFFIXES for p in entries):
            return False
        first_tif = first_tif or next((p for p in entries if p.suffix.lower() in RASTER_SUFFIXES), None)
    if not ((folder / CLASSES_FILE).is_file() or len(subdirs) >= 2):
        return False
    if first_tif is not None:
        rec = (cache or Cache()).get(first_tif, lambda: _raster_record(first_tif))
        return "info" in rec and max(rec["info"]["shape"]) <= PATCH_EDGE
    return True


def _extent(bboxes: List[List[float]], times: List[dt.datetime]) -> pystac.Extent:
    if bboxes:
        box = [min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes),
               max(b[3] for b in bboxes)]
    else:
        box = [-180.0, -90.0, 180.0, 90.0]
    interval = [min(times), max(times)] if times else [None, None]
    return pystac.Extent(pystac.SpatialExtent([box]), pystac.TemporalExtent([interval]))


def _item_id(rel: str) -> str:
    """An item id from a path under a root: ``landsat7_chiapas/training_data.gtif`` ->
    ``landsat7_chiapas.training_data`` (a directory name in the static layout)."""
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem.replace("/", "."))


def _raster_record(path: Path) -> Dict:
    """The cache record of a raster: ``{"info": read_raster's answer}``, or ``{"error": why}``
    for a file that is not a georeferenced raster (kept too, so it is not read again either)."""
    try:
        return {"info": read_raster(path)}
    except DataError as exc:
        return {"error": str(exc)}


def _sample_tree_collection(root_name: str, root: Path, folder: Path, cache: Cache) -> pystac.Collection:
    rel = folder.relative_to(root).as_posix()
    counts: Dict[str, int] = {}
    bboxes, times = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        n = 0
        for f in sorted(class_dir.iterdir()):
            if f.name.startswith(".") or f.suffix.lower() not in CONTAINER_SUFFIXES:
                continue
            if f.suffix.lower() in RASTER_SUFFIXES:  # a GeoTIFF patch: one sample
                rec = cache.get(f, lambda f=f: _raster_record(f))
                if "info" in rec:  # a patch without a CRS still counts; it has no footprint
                    bboxes.append(rec["info"]["bbox"])
                n += 1
            else:  # a NumPy container: its header says how many
                rec = cache.get(f, lambda f=f: {"count": container_info(f)[0]})
                n += rec["count"]
            times.append(dt.datetime.fromtimestamp(rec["mtime_ns"] / 1e9, dt.timezone.utc).replace(microsecond=0))
        counts[class_dir.name] = n
    dataset = f"{root_name}/{rel}"
    coll = pystac.Collection(
        id=f"{root_name}.{_item_id(rel)}", title=dataset,
        description=(f"Training-sample tree `{dataset}`: {sum(counts.values())} samples in {len(counts)} classes "
                     "(one sub-directory per class)."),
        extent=_extent(bboxes, times), license="other",
        extra_fields={"geoml:dataset": dataset, "geoml:kind": "sample-tree"})
    # the label extension's summaries (pystac's LabelExtension class is deprecated: written as JSON)
    coll.stac_extensions.append(LABEL_SCHEMA)
    coll.summaries.add("label:classes", [{"name": None, "classes": sorted(counts)}])
    coll.summaries.add("label:type", ["raster"] if bboxes else ["vector"])
    coll.summaries.add("label:overviews", [{"property_key": None, "counts": [{"name": k, "count": v}
                                                                           for k, v in sorted(counts.items())]}])
    return coll


def root_collection(root_name: str, root: PathLike, href_for: HrefFor, cache: Cache,
                    progress: Optional[ProgressCallback] = None) -> pystac.Collection:
    """The collection of one data root: an item per raster, a child collection per sample tree.

    Parameters
    ----------
    root_name : str
        The root's name (collection id, first part of dataset names).
    root : path-like
        Its directory.
    href_for : callable
        See :data:`HrefFor`.
    cache : Cache
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    pystac.Collection

    Raises
    ------
    DataError
        If ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root_name}: no such directory {root}")
    items: List[pystac.Item] = []
    trees: List[pystac.Collection] = []
    walked = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if here != root and is_sample_tree(here, cache):
            trees.append(_sample_tree_collection(root_name, root, here, cache))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        walked += [here / f for f in sorted(filenames) if f.lower().endswith(RASTER_SUFFIXES)
                   and not f.startswith(".")]
    for i, path in enumerate(walked):
        rel = path.relative_to(root).as_posix()
        report(progress, i / max(1, len(walked)), f"{root_name}/{rel}")
        rec = cache.get(path, lambda path=path: _raster_record(path))
        if "info" not in rec:
            continue  # not a georeferenced raster: not catalogued
        info = rec["info"]
        if max(info["shape"]) <= PATCH_EDGE:
            continue
        items.append(raster_item(info, _item_id(rel), href_for("data", root_name, rel, path), path.name,
                                 f"{root_name}/{rel}", rec["mtime_ns"] / 1e9))
    bboxes = [it.bbox for it in items] + [c.extent.spatial.bboxes[0] for c in trees
                                          if c.extent.spatial.bboxes[0] != [-180.0, -90.0, 180.0, 90.0]]
    times = [it.datetime for it in items]
    coll = pystac.Collection(id=root_name, title=f"data root {root_name}",
                             description=f"The rasters of the shared data root `{root_name}` (read-only).",
                             extent=_extent(bboxes, times), license="other",
                             extra_fields={"geoml:dataset": root_name, "geoml:kind": "data-root"})
    for item in items:
        coll.add_item(item)
    for tree in trees:
        coll.add_child(tree)
    return coll


# -- results ---------------------------------------------------------------------------------
@dataclass
class Result:
    """A published job, as the results collection lists it.

    Attributes
    ----------
    job_id, process, owner : str
    folder : Path
        The folder of its output files.
    finished : datetime, optional
        When it finished (UTC); default: the newest file's modification time.
    extra : dict
        More item properties.
    """

    job_id: str
    process: str
    owner: str
    folder: Path
    finished: Optional[dt.datetime] = None
    extra: Dict = field(default_factory=dict)


def result_item(result: Result, href_for: HrefFor, cache: Cache) -> pystac.Item:
    """The item of a published job: every output file an asset (module docstring's roles);
    geometry and projection from its classification raster (or its first raster), none if it
    wrote no raster.

    Parameters
    ----------
    result : Result
        The job and the folder of its outputs (``job.json`` there is left out).
    href_for : callable
        See :data:`HrefFor` (called with ``kind="result"``, ``name`` = the job id).
    cache : Cache
        Rasters read before.

    Returns
    -------
    pystac.Item
        Id = the job id; ``geoml:owner``, ``geoml:process``; ``datetime`` = when it finished.
    """
    files = sorted(p for p in result.folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.name != "job.json")
    assets: Dict[str, pystac.Asset] = {}
    rasters = []
    for path in files:
        rel = path.relative_to(result.folder).as_posix()
        href = href_for("result", result.job_id, rel, path)
        key = _item_id(rel)
        if path.suffix.lower() in RASTER_SUFFIXES:
            info = cache.get(path, lambda path=path: _raster_record(path)).get("info")
            if info is not None:
                role = asset_role(path.name, info["count"], info["dtype"])
                assets[key] = _raster_asset(info, href, role, rel)
                rasters.append((role != "classification", len(rasters), info))
                continue
        assets[key] = pystac.Asset(href=href, title=rel, roles=["metadata"],
                                   media_type=_MEDIA.get(path.suffix.lower()))
    finished = result.finished
    if finished is None:
        finished = dt.datetime.fromtimestamp(max((p.stat().st_mtime for p in files), default=0), dt.timezone.utc)
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=dt.timezone.utc)
    props = {"geoml:dataset": f"jobs/{result.job_id}", "geoml:process": result.process,
             "geoml:owner": result.owner, "geoml:datetime_source": "job-finished", **result.extra}
    main = min(rasters, key=lambda r: r[:2])[2] if rasters else None
    item = pystac.Item(id=result.job_id, geometry=main["geometry"] if main else None,
                       bbox=main["bbox"] if main else None, datetime=finished.replace(microsecond=0),
                       properties=props)
    if main:
        ProjectionExtension.ext(item, add_if_missing=True).apply(
            epsg=main["epsg"], wkt2=main["wkt2"], shape=main["shape"], transform=main["transform"],
            bbox=main["proj_bbox"])
        EOExtension.add_to(item)
        RasterExtension.add_to(item)
    for key, asset in assets.items():
        item.add_asset(key, asset)
    return item


def results_collection(results: Iterable[Result], href_for: HrefFor, cache: Cache) -> pystac.Collection:
    """The results collection: one item per published job (:func:`result_item`).

    Parameters
    ----------
    results : iterable of Result
    href_for : callable
        See :data:`HrefFor`.
    cache : Cache

    Returns
    -------
    pystac.Collection
        Id ``results``; its extent is the union of the items' (the whole globe when none has a
        footprint).
    """
    items = [result_item(r, href_for, cache) for r in results]
    coll = pystac.Collection(
        id=RESULTS, title="published results",
        description="Outputs of the jobs their owners published (shared with every user); a job leaves this "
                    "collection when it is withdrawn or its outputs expire.",
        extent=_extent([it.bbox for it in items if it.bbox], [it.datetime for it in items]), license="other",
        extra_fields={"geoml:kind": "results"})
    for item in items:
        coll.add_item(item)
    return coll


# -- the catalogue ---------------------------------------------------------------------------
def file_hrefs(out: PathLike) -> HrefFor:
    """``href_for`` of a catalogue written to ``out`` and read from the same machine: each
    file's path relative to ``out`` (so the folder may move with the data beside it)."""
    out = Path(os.path.abspath(out))

    def href_for(kind: str, name: str, rel: str, path: Path) -> str:
        return Path(os.path.relpath(os.path.abspath(path), out)).as_posix()

    return href_for


def build_catalog(roots: Dict[str, PathLike], href_for: HrefFor, cache: Optional[Cache] = None,
                  results: Optional[Iterable[Result]] = None, title: str = "geoml-hub data and results",
                  progress: Optional[ProgressCallback] = None) -> pystac.Catalog:
    """The catalogue of ``roots`` (one collection each) and, if ``results`` is given, the
    results collection.

    Parameters
    ----------
    roots : dict of str to path-like
        Data roots by name.
    href_for : callable
        See :data:`HrefFor` (hrefs relative to the catalogue's root directory, or absolute).
    cache : Cache, optional
        Records of files read before (default: none kept).
    results : iterable of Result, optional
        Published jobs.
    progress : callable, optional

    Returns
    -------
    pystac.Catalog
        Not yet saved (:func:`save_catalog`).
    """
    cache = cache or Cache()

    def item_href(kind, name, rel, path):  # items live two folders below the root (normalize_hrefs)
        href = href_for(kind, name, rel, path)
        return href if re.match(r"^[a-z][a-z0-9+.-]*:|^/", href) else "../../" + href

    cat = pystac.Catalog(id=CATALOG_ID, title=title,
                         description="The shared remote-sensing data (one collection per data root) and the "
                                     "published results of geoml-hub.")
    names = sorted(roots)
    for i, name in enumerate(names):
        sub = None if progress is None else (lambda f, m, i=i: report(progress, (i + f) / (len(names) + 1), m))
        cat.add_child(root_collection(name, roots[name], item_href, cache, sub))
    if results is not None:
        cat.add_child(results_collection(results, item_href, cache))
    report(progress, 1.0, "catalogue built")
    return cat


def save_catalog(catalog: pystac.Catalog, out: PathLike, link: bool = False) -> Path:
    """Write ``catalog`` as a self-contained static catalogue into ``out``, atomically.

    The catalogue is written (``normalize_hrefs`` + ``save(SELF_CONTAINED)``) into a new
    folder beside ``out``, then put in place: with ``link``, ``out`` is a symbolic link swapped
    in one ``rename`` to the new folder (readers never see a half-written catalogue; the
    previous folder is kept until the next swap, so a reader inside it can finish); without,
    the old folder is renamed away and removed after the new one is renamed to ``out``.

    Parameters
    ----------
    catalog : pystac.Catalog
    out : path-like
        The catalogue's folder (``out/catalog.json``).
    link : bool
        Swap a symbolic link (a server's state directory) instead of folders (a user's ``--out``).

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        catalog.normalize_hrefs(str(tmp))
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, dest_href=str(tmp))
        for d in [tmp, *tmp.rglob("*")]:  # readable by the server's other users, as write_text's files
            os.chmod(d, 0o755 if d.is_dir() else 0o644)
        if link:
            previous = os.path.realpath(out) if out.is_symlink() else None
            tmp_link = out.parent / f".{out.name}.{uuid.uuid4().hex}.link"
            os.symlink(tmp.name, tmp_link)
            if out.exists() and not out.is_symlink():
                shutil.rmtree(out)
            os.replace(tmp_link, out)
            for old in out.parent.glob(f".{out.name}.*"):  # keep the new and the previous folder
                if old.is_dir() and str(old) not in (str(tmp), previous):
                    shutil.rmtree(old, ignore_errors=True)
        else:
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex}"
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def validate_offline(obj: Dict) -> List[str]:
    """Validate a STAC object (a dict) against the core STAC JSON schemas that pystac ships, with
    no network access; the extensions' schemas are not shipped by any installed package, so the
    extension fields are not checked against schemas.

    Parameters
    ----------
    obj : dict
        A catalogue, collection or item as JSON.

    Returns
    -------
    list of str
        The schema URIs validated against.

    Raises
    ------
    pystac.STACValidationError
        If the object breaks its core schema.
    """
    from pystac.validation import JsonSchemaSTACValidator, validate_dict  # jsonschema: validation only

    class CoreOnly(JsonSchemaSTACValidator):
        def validate_extension(self, *args, **kwargs):
            return None

    core = {k: v for k, v in obj.items() if k != "stac_extensions"}
    return validate_dict(dict(core, stac_extensions=[]), validator=CoreOnly())
