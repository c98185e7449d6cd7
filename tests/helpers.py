"""Helpers shared by the test modules: small synthetic trees and rasters, file checks."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

CONSOLE_SCRIPT = Path(sys.executable).parent / "geoml-hub"
#: The real data (``<repo>/../shared/data``, or ``$GEOML_TEST_DATA``); tests that need it are
#: marked ``data`` (tests/conftest.py) and skip with a reason where it is missing.
DATA = Path(os.environ.get("GEOML_TEST_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
#: The hubs of a test session name the users' system accounts ``jt<pid>-<name>`` instead of
#: ``jupyter-<name>`` (``GeomlLocalSpawner.system_user_prefix``): never a real account, and never
#: one that a concurrent test session would remove.
ACCOUNT_PREFIX = f"jt{os.getpid() % 100000}-"

#: Debian's Chromium, driven by Playwright in the browser tests
CHROMIUM = "/usr/bin/chromium"
EUROSAT = DATA / "eurosat_ms"
CHIAPAS = DATA / "landsat7_chiapas"
SCENE_1999 = CHIAPAS / "LE70220491999322EDC01_stack.gtif"
SCENE_2002 = CHIAPAS / "LE70220492002106EDC00_stack.gtif"
LABELS = CHIAPAS / "training_data.gtif"

EUROSAT_COUNTS = {"AnnualCrop": 30, "Forest": 30, "HerbaceousVegetation": 30, "Highway": 24, "Industrial": 25,
                  "Pasture": 20, "PermanentCrop": 25, "Residential": 30, "River": 25, "SeaLake": 30}
CHIAPAS_NAMES = {1: "forest", 2: "water", 3: "herbaceous", 4: "barren", 5: "urban"}
CHIAPAS_COUNTS = {"forest": 383, "water": 16, "herbaceous": 145, "barren": 106, "urban": 68}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT_CRS = "EPSG:32615"
#: A class name that is markup: a stored cross-site scripting attempt through a raster's tags.
XSS_NAME = "<img src=x onerror=alert(document.cookie)>"


def assert_png(path) -> None:
    path = Path(path)
    assert path.is_file(), f"{path} missing"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 1000, f"{path} is suspiciously small ({len(data)} bytes)"


def read_csv_rows(path) -> List[Dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def csv_header(path) -> List[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def class_samples(rng: np.random.Generator, n: int, bands: int, size: int, level: float, spread: float = 1.0,
                  dtype=np.float32) -> np.ndarray:
    """``(n, bands, size, size)`` samples around ``level`` with a per-sample offset (so clusters form)."""
    per_sample = rng.normal(0.0, spread * 3.0, size=(n, bands, 1, 1))
    noise = rng.normal(0.0, spread, size=(n, bands, size, size))
    band_offsets = np.arange(bands, dtype=np.float64).reshape(1, bands, 1, 1)
    return (level + band_offsets + per_sample + noise).astype(dtype)


def write_npy_tree(root, spec: Mapping[str, Sequence[np.ndarray]], classes: Optional[Mapping[str, int]] = None) -> Path:
    """Write a ``.npy`` tree: ``spec`` maps class name → list of ``(N, bands, rows, cols)`` arrays (one file each)."""
    root = Path(root)
    for name, arrays in spec.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for k, arr in enumerate(arrays):
            np.save(d / f"part_{k:02d}.npy", np.asarray(arr))
    if classes is not None:
        (root / "classes.json").write_text(json.dumps(dict(classes)), encoding="utf-8")
    return root


def make_unbalanced_tree(root, counts: Mapping[str, int], bands: int = 3, size: int = 4, seed: int = 0,
                         files_per_class: int = 2) -> Path:
    """A tree whose classes have ``counts`` samples, each class split over several ``.npy`` files."""
    rng = np.random.default_rng(seed)
    spec = {}
    for k, (name, n) in enumerate(counts.items()):
        arr = class_samples(rng, n, bands, size, level=10.0 * k)
        cuts = np.array_split(np.arange(n), min(files_per_class, n))
        spec[name] = [arr[c] for c in cuts if len(c)]
    return write_npy_tree(root, spec)


def write_raster(path, data: np.ndarray, crs=DEFAULT_CRS, transform=None, nodata=None, **extra) -> Path:
    """Write a GeoTIFF from ``(bands, rows, cols)`` or ``(rows, cols)`` data."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[np.newaxis]
    if transform is None:
        transform = from_origin(462405.0, 1741815.0, 30.0, 30.0)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": crs, "transform": transform}
    if nodata is not None:
        profile["nodata"] = nodata
    profile.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def hostile_labels(source, path, codes=(1, 2, 3, 4, 5)) -> Path:
    """A copy of the label raster ``source`` whose ``CLASS_NAMES`` tag names class
    ``codes[0]`` :data:`XSS_NAME` (the others ``class <code>``)."""
    import rasterio

    data, profile = read_raster(source)
    names = {str(c): (XSS_NAME if k == 0 else f"class {c}") for k, c in enumerate(codes)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(CLASS_NAMES=json.dumps(names))
    return path


class TokenIdentity:
    """The authenticator hook's contract (``identify(environ) -> Identity | None``) with hub-like
    tokens: ``Authorization: token <t>`` is user ``tokens[t]`` (``admin`` is an admin), and
    ``token_of`` hands the token on, as :class:`geoml_hub.web.auth.JupyterHubAuth` does, so the
    map calls the WPS as its user."""

    def __init__(self, tokens: Mapping[str, str]):
        self.tokens = dict(tokens)

    def token_of(self, environ) -> Optional[str]:
        kind, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        return value.strip() if kind.lower() in ("token", "bearer") and value.strip() else None

    def identify(self, environ):
        from geoml_hub.web.auth import Identity

        name = self.tokens.get(self.token_of(environ) or "")
        return Identity(name, admin=(name == "admin")) if name else None


def read_raster(path):
    """``(array (bands, rows, cols), profile dict)`` of a raster."""
    import rasterio

    with rasterio.open(path) as src:
        return src.read(), dict(src.profile)


def script(*args, check_rc=None):
    exe = str(CONSOLE_SCRIPT) if CONSOLE_SCRIPT.exists() else shutil.which("geoml-hub")
    assert exe, "the geoml-hub console script is not installed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


def chiapas_polygons(path, with_codes=True):
    """The Chiapas reference labels as GeoJSON polygons in longitude/latitude (what a user
    digitising them on the map would save)."""
    import rasterio
    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    with rasterio.open(LABELS) as src:
        labels = src.read(1)
        features = []
        for geom, value in shapes(labels, mask=labels > 0, transform=src.transform):
            props = {"class": CHIAPAS_NAMES[int(value)]}
            if with_codes:
                props["code"] = int(value)
            features.append({"type": "Feature", "properties": props,
                             "geometry": transform_geom(src.crs, "EPSG:4326", geom)})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return labels, len(features)


def run_main(argv, capsys):
    """Run ``geoml-hub ARGV`` in this process: ``(exit status, stdout, stderr)``."""
    from geoml_hub.cli import main  # the CLI imports the whole core: only the CLI tests pay for it

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err
