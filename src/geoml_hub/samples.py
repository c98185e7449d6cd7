"""Training-sample trees and manifests.

A **training-sample tree** is a directory with one sub-directory per class. Each class
directory holds *containers* of samples; a **sample** is the pair ``(file, index)``.
Two containers are supported:

* a GeoTIFF patch (``.tif``/``.tiff``): one sample per file, shape ``(bands, rows, cols)``
  — the EuroSAT layout, read with rasterio;
* a NumPy array (``.npy``, or ``.npz`` with one array or an array named ``samples``) of
  shape ``(N, bands, rows, cols)`` — N samples per file.

Class names are the directory names. Class codes are stable: the position of the name
in the sorted list of names, unless the tree root holds a ``classes.json`` mapping
names to integer codes (written by :func:`geoml_hub.extraction.extract_samples` so that
codes stay equal to those of the reference raster the samples came from).

A **manifest** (``manifest.csv``) lists samples explicitly with the columns
``file, index, class, code, cluster``; it is what balancing writes and training reads.
Relative ``file`` entries are resolved against the manifest's directory.
"""

from __future__ import annotations

import csv
import json
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DataError
from .fileio import PathLike, write_csv, write_json

TIFF_SUFFIXES = (".tif", ".tiff")
NUMPY_SUFFIXES = (".npy", ".npz")
CONTAINER_SUFFIXES = TIFF_SUFFIXES + NUMPY_SUFFIXES
CLASSES_FILE = "classes.json"
MANIFEST_HEADER = ("file", "index", "class", "code", "cluster")


@dataclass(frozen=True)
class Container:
    """One file of samples.

    Attributes
    ----------
    path : Path
        Absolute path of the file.
    class_name : str
        Class of every sample in the file.
    count : int
        Number of samples N.
    shape : tuple of int
        ``(bands, rows, cols)`` of one sample.
    dtype : str
        NumPy dtype name of the stored values.
    """

    path: Path
    class_name: str
    count: int
    shape: Tuple[int, int, int]
    dtype: str


@dataclass(frozen=True)
class Sample:
    """One training sample: ``index`` inside container ``file``, of class ``class_name``."""

    file: Path
    index: int
    class_name: str
    cluster: int = -1


@dataclass
class SampleSet:
    """An ordered list of samples with their class table, band count and patch size.

    Built from a tree (:func:`open_tree`) or a manifest (:func:`read_manifest`); both are
    what balancing, training and evaluation consume.

    Attributes
    ----------
    samples : list of Sample
    classes : dict of str to int
        Class name → class code, ordered by code.
    bands : int
        Bands per sample.
    patch_size : tuple of int
        ``(rows, cols)`` of one sample, pixels.
    source : str
        The tree root or manifest path the set was read from.
    """

    samples: List[Sample]
    classes: "OrderedDict[str, int]"
    bands: int
    patch_size: Tuple[int, int]
    source: str = ""
    dtype: str = "float32"
    _counts: Dict[Path, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def class_names(self) -> List[str]:
        """Class names ordered by code."""
        return list(self.classes)

    def labels(self) -> np.ndarray:
        """Class index (0..K-1, position in :attr:`class_names`) of every sample, ``(N,)`` int64."""
        position = {name: i for i, name in enumerate(self.classes)}
        return np.array([position[s.class_name] for s in self.samples], dtype=np.int64)

    def counts(self) -> Dict[str, int]:
        """Number of samples per class name."""
        out = {name: 0 for name in self.classes}
        for s in self.samples:
            out[s.class_name] += 1
        return out

    def subset(self, indices: Sequence[int]) -> "SampleSet":
        """A new set holding the samples at ``indices`` (same class table)."""
        return SampleSet([self.samples[i] for i in indices], OrderedDict(self.classes), self.bands,
                         self.patch_size, self.source, self.dtype, self._counts)

    def iter_files(self) -> Iterator[Tuple[Path, List[int]]]:
        """Yield ``(file, positions)``: the positions in this set of the samples stored in each file.

        Files come in the order of their first sample, so reading file by file touches
        each file once.
        """
        groups: "OrderedDict[Path, List[int]]" = OrderedDict()
        for pos, s in enumerate(self.samples):
            groups.setdefault(s.file, []).append(pos)
        yield from groups.items()

    def read(self, positions: Optional[Sequence[int]] = None, dtype=np.float32) -> np.ndarray:
        """Read samples into memory.

        Parameters
        ----------
        positions : sequence of int, optional
            Positions in this set; all samples by default.
        dtype : numpy dtype
            Output dtype.

        Returns
        -------
        numpy.ndarray
            ``(len(positions), bands, rows, cols)`` array of ``dtype``.
        """
        positions = list(range(len(self.samples))) if positions is None else list(positions)
        out = np.empty((len(positions), self.bands, *self.patch_size), dtype=dtype)
        by_file: "OrderedDict[Path, List[Tuple[int, int]]]" = OrderedDict()
        for k, pos in enumerate(positions):
            s = self.samples[pos]
            by_file.setdefault(s.file, []).append((k, s.index))
        for path, pairs in by_file.items():
            arr = read_container(path)
            idx = np.array([i for _, i in pairs])
            if idx.max() >= arr.shape[0]:
                raise DataError(f"{path}: sample index {int(idx.max())} out of range (file holds {arr.shape[0]})")
            _check_shape(path, arr.shape[1:], self.bands, self.patch_size)
            out[[k for k, _ in pairs]] = arr[idx]
        return out


# ---------------------------------------------------------------------------
# containers


def _npz_member(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: corrupt .npz file ({_first_line(exc)})") from None
    if "samples" in names:
        return "samples"
    if len(names) == 1:
        return names[0]
    raise DataError(f"{path}: .npz must hold one array or an array named 'samples' (found {names})")


def _npy_header(fh) -> Tuple[Tuple[int, ...], np.dtype]:
    """Shape and dtype from an open ``.npy`` stream, reading only its header."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return shape, dtype


def container_info(path: PathLike) -> Tuple[int, Tuple[int, int, int], str]:
    """Read only the header of a container.

    Returns
    -------
    count : int
        Number of samples N.
    shape : tuple of int
        ``(bands, rows, cols)`` of one sample.
    dtype : str

    Raises
    ------
    DataError
        If the file cannot be read or its array is not 4-D (3-D for GeoTIFF).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            with rasterio.open(path) as src:
                return 1, (src.count, src.height, src.width), src.dtypes[0]
        except RasterioIOError as exc:
            raise DataError(f"{path}: cannot read GeoTIFF ({_first_line(exc)})") from None
    if suffix == ".npy":
        try:
            with open(path, "rb") as fh:
                shape, dtype = _npy_header(fh)
                expected = fh.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt .npy file ({_first_line(exc)})") from None
        size = path.stat().st_size
        if size < expected:
            raise DataError(f"{path}: truncated .npy file ({size} bytes, header promises {expected})")
    elif suffix == ".npz":
        member = _npz_member(path)
        try:
            with zipfile.ZipFile(path) as zf, zf.open(member + ".npy") as fh:
                shape, dtype = _npy_header(fh)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: corrupt .npz file ({_first_line(exc)})") from None
    else:
        raise DataError(f"{path}: not a sample container (expected {', '.join(CONTAINER_SUFFIXES)})")
    if len(shape) != 4:
        raise DataError(f"{path}: array must have shape (N, bands, rows, cols), got {tuple(shape)}")
    return int(shape[0]), (int(shape[1]), int(shape[2]), int(shape[3])), np.dtype(dtype).name


def read_container(path: PathLike) -> np.ndarray:
    """Return the samples of a container as an ``(N, bands, rows, cols)`` array.

    ``.npy`` files are memory-mapped (nothing is read until indexed); GeoTIFFs and
    ``.npz`` are read whole (they are one patch, or one region's samples).

    Raises
    ------
    DataError
        If the file cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import rasterio
            from rasterio.errors import RasterioError

            try:
                with rasterio.open(path) as src:
                    return src.read()[np.newaxis]
            except RasterioError as exc:
                raise DataError(f"{path}: cannot read GeoTIFF ({_first_line(exc)})") from None
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            member = _npz_member(path)
            with np.load(path, allow_pickle=False) as z:
                arr = z[member]
        else:
            raise DataError(f"{path}: not a sample container (expected {', '.join(CONTAINER_SUFFIXES)})")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: corrupt or unreadable file ({_first_line(exc)})") from None
    if arr.ndim != 4:
        raise DataError(f"{path}: array must have shape (N, bands, rows, cols), got {arr.shape}")
    return arr


def iter_chunks(path: PathLike, chunk: int = 256) -> Iterator[np.ndarray]:
    """Yield a container's samples in chunks of at most ``chunk``, each ``(n, bands, rows, cols)``.

    Memory stays bounded by one chunk for ``.npy`` containers of any size.
    """
    arr = read_container(path)
    for start in range(0, arr.shape[0], chunk):
        yield np.asarray(arr[start:start + chunk])


def _int_cell(row: Dict, column: str, where: str, default: Optional[int] = None) -> int:
    """The integer in a manifest row's ``column`` (``default`` when empty and allowed)."""
    value = row.get(column)
    if value in (None, "") and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: column {column} must be an integer, got {value if value else 'nothing'!r}") from None


def _first_line(exc: BaseException) -> str:
    """What is wrong with a sample file, in words: the exception texts of NumPy, zipfile and
    GDAL describe their internals ("EOF: reading array header", "cannot reshape array ...")."""
    text = (str(exc).strip().splitlines() or [""])[0]
    low = text.lower()
    if isinstance(exc, EOFError) or "eof" in low or "reshape" in low or "mmap length" in low or "truncat" in low:
        return "the file is truncated"
    if "magic string" in low or "unsupported .npy format" in low:
        return "not a NumPy .npy file"
    if isinstance(exc, zipfile.BadZipFile) or "zip" in low:
        return "not a complete zip archive"
    if "allow_pickle" in low or "pickle" in low:
        return "it holds Python objects, which are not loaded for safety"
    if "not recognized as being in a supported file format" in low:
        return "not a format GDAL can read"
    if len(text.split()) < 3:  # a bare key or number ("101") says nothing
        return "unreadable"
    return text


def _check_shape(path: Path, shape: Sequence[int], bands: int, patch: Tuple[int, int]) -> None:
    if shape[0] != bands:
        raise DataError(f"{path}: {shape[0]} bands, but the other samples have {bands}")
    if tuple(shape[1:]) != tuple(patch):
        raise DataError(f"{path}: patch size {shape[1]}x{shape[2]}, but the other samples are {patch[0]}x{patch[1]}")


# ---------------------------------------------------------------------------
# trees


def read_class_codes(root: PathLike, names: Sequence[str]) -> "OrderedDict[str, int]":
    """Class name → code for a tree: ``classes.json`` if present, else sorted position.

    Raises
    ------
    DataError
        If ``classes.json`` is malformed or lacks a class present in the tree.
    """
    root = Path(root)
    names = sorted(names)
    spec = root / CLASSES_FILE
    if not spec.exists():
        return OrderedDict((n, i) for i, n in enumerate(names))
    try:
        mapping = json.loads(spec.read_text(encoding="utf-8"))
        mapping = {str(k): int(v) for k, v in mapping.items()}
    except (ValueError, TypeError, AttributeError):
        raise DataError(f"{spec}: must be a JSON object mapping class names to integer codes, e.g. "
                        '{"forest": 1, "water": 2}') from None
    missing = [n for n in names if n not in mapping]
    if missing:
        raise DataError(f"{spec}: no code for class directories {missing}")
    if len(set(mapping[n] for n in names)) != len(names):
        raise DataError(f"{spec}: class codes are not unique")
    return OrderedDict(sorted(((n, mapping[n]) for n in names), key=lambda kv: kv[1]))


def open_tree(root: PathLike) -> SampleSet:
    """Open a training-sample tree and check it.

    Parameters
    ----------
    root : path-like
        Directory holding one sub-directory per class.

    Returns
    -------
    SampleSet
        Samples ordered by class name, then file name, then index.

    Raises
    ------
    DataError
        If the root is missing or has no class directories, a class directory holds no
        container, a file is unreadable or corrupt, or band counts or patch sizes differ.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: training-sample tree not found (expected a directory with one sub-directory per class)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class directories")
    classes = read_class_codes(root, [p.name for p in class_dirs])
    samples: List[Sample] = []
    bands = patch = dtype = None
    counts: Dict[Path, int] = {}
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir()
                       if p.is_file() and p.suffix.lower() in CONTAINER_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise DataError(f"{class_dir}: empty class directory (no {', '.join(CONTAINER_SUFFIXES)} files)")
        for path in files:
            path = path.resolve()
            count, shape, dt = container_info(path)
            if bands is None:
                bands, patch, dtype = shape[0], (shape[1], shape[2]), dt
            else:
                _check_shape(path, shape, bands, patch)
            counts[path] = count
            samples.extend(Sample(path, i, class_dir.name) for i in range(count))
    return SampleSet(samples, classes, bands, patch, str(root), dtype, counts)


# ---------------------------------------------------------------------------
# manifests


def write_manifest(path: PathLike, sample_set: SampleSet) -> Path:
    """Write ``manifest.csv`` (``file, index, class, code, cluster``), file paths absolute."""
    codes = sample_set.classes
    rows = ((str(s.file), s.index, s.class_name, codes[s.class_name], s.cluster) for s in sample_set.samples)
    return write_csv(path, MANIFEST_HEADER, rows)


def read_manifest(path: PathLike, check: bool = True) -> SampleSet:
    """Read a manifest written by :func:`write_manifest`.

    Parameters
    ----------
    path : path-like
        The CSV file.
    check : bool
        Read every container's header to check band count and patch size (default).

    Raises
    ------
    DataError
        If the file is missing, lacks a column, has a bad row, or names an unreadable
        container or inconsistent samples.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    base = path.parent
    samples: List[Sample] = []
    codes: Dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("file", "index", "class") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: manifest lacks column(s) {missing}")
        for line, row in enumerate(reader, start=2):
            where = f"{path}: line {line}"
            if not row.get("file") or not row.get("class"):
                empty = [c for c in ("file", "class") if not row.get(c)]
                raise DataError(f"{where}: column(s) {', '.join(empty)} empty or missing")
            file = Path(row["file"])
            file = (file if file.is_absolute() else base / file).resolve()
            name = row["class"]
            index = _int_cell(row, "index", where)
            cluster = _int_cell(row, "cluster", where, -1)
            samples.append(Sample(file, index, name, cluster))
            if row.get("code") not in (None, ""):
                code = _int_cell(row, "code", where)
                if codes.setdefault(name, code) != code:
                    raise DataError(f"{where}: class {name} has two codes ({codes[name]} and {code})")
    if not samples:
        raise DataError(f"{path}: manifest lists no samples")
    names = sorted({s.class_name for s in samples})
    if len(codes) == len(names):
        classes = OrderedDict(sorted(codes.items(), key=lambda kv: kv[1]))
    else:
        classes = OrderedDict((n, i) for i, n in enumerate(names))
    bands = patch = dtype = None
    counts: Dict[Path, int] = {}
    files = OrderedDict.fromkeys(s.file for s in samples)
    for f in files:
        if not f.exists():
            raise DataError(f"{path}: sample file {f} not found")
        if not check and bands is not None:
            continue
        count, shape, dt = container_info(f)
        counts[f] = count
        if bands is None:
            bands, patch, dtype = shape[0], (shape[1], shape[2]), dt
        else:
            _check_shape(f, shape, bands, patch)
    if check:
        for s in samples:
            if s.index >= counts[s.file] or s.index < 0:
                raise DataError(f"{path}: sample index {s.index} out of range for {s.file} ({counts[s.file]} samples)")
    return SampleSet(samples, classes, bands, patch, str(path), dtype, counts)


def load_samples(path: PathLike) -> SampleSet:
    """Open a training-sample tree (a directory) or a manifest (a ``.csv`` file)."""
    path = Path(path)
    if path.is_dir():
        return open_tree(path)
    if path.suffix.lower() == ".csv":
        return read_manifest(path)
    if not path.exists():
        raise DataError(f"{path}: not found (expected a training-sample tree or a manifest.csv)")
    raise DataError(f"{path}: expected a training-sample tree (directory) or a manifest (.csv)")


def write_tree_classes(root: PathLike, classes: Dict[str, int]) -> Path:
    """Write ``classes.json`` (class name → code) at the root of a tree."""
    return write_json(Path(root) / CLASSES_FILE, dict(classes))
