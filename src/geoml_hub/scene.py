"""Scenes: one multi-band GeoTIFF, or an ordered list of single-band files on one grid.

A :class:`Scene` reads windows of its bands with rasterio (never the whole scene),
padding windows that reach past the scene edge by repeating the edge pixels, and tells
which pixels are nodata. Grids are compared with :func:`check_same_grid`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DataError, GridMismatchError
from .fileio import PathLike

#: GDAL's block cache (MB) while classifying and validating: GDAL's default is 5 % of RAM; capped
#: so memory stays flat.
GDAL_CACHE_MB = 64


def _open(path: PathLike):
    import rasterio
    from rasterio.errors import RasterioIOError

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: raster not found")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise DataError(f"{path}: cannot read raster ({str(exc).splitlines()[0]})") from None


def read_window(ds, band: Optional[int] = None, window=None) -> np.ndarray:
    """``ds.read(band, window=window)`` (``band`` None: all bands); a GDAL read error (a truncated or
    corrupt file) becomes a :class:`DataError` naming the file (and the band)."""
    from rasterio.errors import RasterioError

    try:
        return ds.read(band, window=window)
    except RasterioError:
        where = f" band {band}" if band is not None else ""
        raise DataError(f"{ds.name}: cannot read{where} pixels (the file is truncated or corrupt)") from None


def check_readable(paths: Sequence[PathLike]) -> None:
    """Read every block of every band of the rasters ``paths`` (nothing is kept), so that a
    truncated or corrupt file fails before anything is written.

    Raises
    ------
    DataError
        Naming the file and band that cannot be read.
    """
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        for path in paths:
            with _open(path) as ds:
                for _, win in ds.block_windows(1):
                    read_window(ds, None, win)


def crs_equal(a, b, ignore_name: bool = False) -> bool:
    """True if two CRSs are equal (rasterio's comparison, GDAL ``IsSame``, which ignores names).

    With ``ignore_name``, also if both identify as the same EPSG code, or have equal PROJ
    strings, e.g. ``+ellps=WGS84 +towgs84=0,...`` against EPSG:32615, which ``IsSame`` refuses.
    """
    if a == b:
        return True
    if not ignore_name or a is None or b is None:
        return False
    epsg = a.to_epsg()
    return (epsg is not None and epsg == b.to_epsg()) or a.to_proj4() == b.to_proj4()


def check_same_grid(a, b, name_a: str, name_b: str, ignore_crs_name: bool = False) -> None:
    """Raise :class:`GridMismatchError` naming what differs between two open datasets.

    Shape (rows, cols), affine transform (tolerance 1e-6 of a pixel) and CRS are compared.
    ``ignore_crs_name`` accepts CRSs that are the same projection under different names.
    """
    if (a.height, a.width) != (b.height, b.width):
        raise GridMismatchError(f"{name_a} and {name_b} differ in shape: {a.height}x{a.width} vs {b.height}x{b.width} pixels")
    if not a.transform.almost_equals(b.transform, precision=1e-6 * max(abs(a.transform.a), 1e-12)):
        raise GridMismatchError(f"{name_a} and {name_b} differ in transform: {tuple(a.transform)[:6]} vs {tuple(b.transform)[:6]}")
    if not crs_equal(a.crs, b.crs, ignore_crs_name):
        hint = "" if ignore_crs_name else (" (if they are the same projection under different names, use "
                                           "--ignore-crs-name, or the WPS input ignore_crs_name=true)")
        raise GridMismatchError(f"{name_a} and {name_b} differ in CRS: {a.crs} vs {b.crs}{hint}")


class Scene:
    """A scene made of one or more rasters on one grid, bands in file order.

    Parameters
    ----------
    paths : path-like or sequence of path-like
        One multi-band GeoTIFF, or several files (typically single-band, Landsat style)
        whose bands are concatenated in the order given.

    Raises
    ------
    DataError
        If a file is missing or unreadable.
    GridMismatchError
        If the files are not on one grid.
    """

    def __init__(self, paths) -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        paths = [Path(p) for p in paths]
        if not paths:
            raise DataError("a scene needs at least one raster file")
        self.paths = paths
        self._datasets = []
        try:
            for p in paths:
                self._datasets.append(_open(p))
            first = self._datasets[0]
            for p, ds in zip(paths[1:], self._datasets[1:]):
                check_same_grid(first, ds, str(paths[0]), str(p))
        except Exception:
            self.close()
            raise
        # (dataset, band index in dataset) for each scene band
        self._bands: List[Tuple[object, int]] = [(ds, b) for ds in self._datasets for b in range(1, ds.count + 1)]

    # properties of the grid
    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self._bands)

    @property
    def height(self) -> int:
        return self._datasets[0].height

    @property
    def width(self) -> int:
        return self._datasets[0].width

    @property
    def transform(self):
        return self._datasets[0].transform

    @property
    def crs(self):
        return self._datasets[0].crs

    @property
    def profile(self) -> dict:
        return dict(self._datasets[0].profile)

    @property
    def dataset(self):
        """The first underlying rasterio dataset (for grid comparisons)."""
        return self._datasets[0]

    def nodata(self, band: int) -> Optional[float]:
        """Nodata value of 1-based scene band ``band`` (``None`` if unset)."""
        ds, _ = self._bands[band - 1]
        return ds.nodata

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for ds in self._datasets:
            ds.close()

    def read(self, bands: Sequence[int], row_off: int, col_off: int, rows: int, cols: int,
             dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
        """Read a window, padding past the edges by repeating edge pixels.

        Parameters
        ----------
        bands : sequence of int
            1-based scene band indexes, in the order wanted.
        row_off, col_off : int
            Upper-left pixel of the window; may be negative.
        rows, cols : int
            Window size in pixels; may reach past the scene.
        dtype : numpy dtype

        Returns
        -------
        data : numpy.ndarray
            ``(len(bands), rows, cols)`` of ``dtype``.
        valid : numpy.ndarray
            ``(rows, cols)`` bool: False where any band is nodata (or NaN), and in padding.
        """
        from rasterio.windows import Window

        r0, c0 = max(row_off, 0), max(col_off, 0)
        r1, c1 = min(row_off + rows, self.height), min(col_off + cols, self.width)
        if r1 <= r0 or c1 <= c0:
            raise DataError(f"window ({row_off}, {col_off}, {rows}, {cols}) lies outside the scene")
        win = Window(c0, r0, c1 - c0, r1 - r0)
        data = np.empty((len(bands), r1 - r0, c1 - c0), dtype=dtype)
        valid = np.ones((r1 - r0, c1 - c0), dtype=bool)
        for k, b in enumerate(bands):
            if b < 1 or b > self.count:
                raise DataError(f"band {b} outside 1..{self.count} of scene {self.paths[0]}")
            ds, idx = self._bands[b - 1]
            arr = read_window(ds, idx, win)
            nd = ds.nodata
            if nd is not None:
                valid &= ~((arr == nd) | (np.isnan(arr) if np.isnan(nd) else False))
            if arr.dtype.kind == "f":
                valid &= ~np.isnan(arr)
            data[k] = arr
        pad = ((r0 - row_off, row_off + rows - r1), (c0 - col_off, col_off + cols - c1))
        if any(p for pair in pad for p in pair):
            data = np.pad(data, ((0, 0),) + pad, mode="edge")
            valid = np.pad(valid, pad, mode="constant", constant_values=False)
        return data, valid

    def tiles(self, size: int) -> Iterator[Tuple[int, int, int, int]]:
        """Yield ``(row_off, col_off, rows, cols)`` tiles of at most ``size``×``size`` covering the scene."""
        for r in range(0, self.height, size):
            for c in range(0, self.width, size):
                yield r, c, min(size, self.height - r), min(size, self.width - c)
