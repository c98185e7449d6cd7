"""Shared fixtures: the real data in ../shared/data and small trained models.

The real data lives beside the repository (``<repo>/../shared/data``); it is never copied
into the repository and every output goes to pytest's temporary directories.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process: the suite shares the CPUs with other work, and
# oversubscribed OpenMP threads make tiny PyTorch models orders of magnitude slower.
# Set before torch is imported; inherited by the console-script subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import inspect  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import DATA  # noqa: E402
EUROSAT = DATA / "eurosat_ms"
CHIAPAS = DATA / "landsat7_chiapas"
SCENE_1999 = CHIAPAS / "LE70220491999322EDC01_stack.gtif"
SCENE_2002 = CHIAPAS / "LE70220492002106EDC00_stack.gtif"
LABELS = CHIAPAS / "training_data.gtif"

EUROSAT_COUNTS = {"AnnualCrop": 30, "Forest": 30, "HerbaceousVegetation": 30, "Highway": 24, "Industrial": 25,
                  "Pasture": 20, "PermanentCrop": 25, "Residential": 30, "River": 25, "SeaLake": 30}
CHIAPAS_NAMES = {1: "forest", 2: "water", 3: "herbaceous", 4: "barren", 5: "urban"}
CHIAPAS_COUNTS = {"forest": 383, "water": 16, "herbaceous": 145, "barren": 106, "urban": 68}


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


# -- markers -------------------------------------------------------------------------------------
#: what marks a test ``data``: a fixture or test whose source names the real data
_DATA_SOURCE = re.compile(r"\b(DATA|EUROSAT|CHIAPAS|SCENE_1999|SCENE_2002|LABELS|WpsServer|data_dir)\b"
                          r"|[\"']data/(eurosat|landsat7)")
#: modules that drive Chromium
_BROWSER_MODULES = {"test_map_browser"}
_SOURCES: dict = {}


def _names_data(func) -> bool:
    if func not in _SOURCES:
        try:
            _SOURCES[func] = bool(_DATA_SOURCE.search(inspect.getsource(func)))
        except (OSError, TypeError):
            _SOURCES[func] = False
    return _SOURCES[func]


def pytest_collection_modifyitems(config, items):
    """Mark each test ``data`` (it or a fixture it uses reads ``../shared/data``) and ``browser``
    (Chromium), beside the modules' own ``slow`` and ``cluster`` marks, so that
    ``pytest -m "not data and not slow and not browser and not cluster"`` is the fast unit layer.
    A ``data`` test skips, with the reason, where the data is missing (never under ``CI=true``)."""
    missing = not DATA.is_dir()
    for item in items:
        funcs = [getattr(item, "function", None)]
        for defs in getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).values():
            funcs += [d.func for d in defs]
        if any(f is not None and _names_data(f) for f in funcs):
            item.add_marker(pytest.mark.data)
            if missing and not os.environ.get("CI"):
                item.add_marker(pytest.mark.skip(reason=f"needs the real data in {DATA} (../shared/data)"))
        if item.module.__name__.rpartition(".")[2] in _BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)


#: The hubs of a test session name the users' system accounts ``jt<pid>-<name>`` instead of
#: ``jupyter-<name>`` (``GeomlLocalSpawner.system_user_prefix``): never a real account, and never
#: one that a concurrent test session would remove.
ACCOUNT_PREFIX = f"jt{os.getpid() % 100000}-"


@pytest.fixture(scope="session")
def shared_base():
    """A 0755 directory (``/var/tmp`` as root) for what ``geoml-hub up`` as root shares with the
    users' accounts (``--homes-dir``, ``--public-dir``), which pytest's 0700 temporary
    directories would hide from them; at the end, the accounts the hubs of the session created
    (``ACCOUNT_PREFIX<name>``) are removed."""
    import pwd
    import shutil
    import subprocess
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="geoml-hub-test-", dir="/var/tmp" if os.geteuid() == 0 else None))
    os.chmod(base, 0o755)
    yield base
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(ACCOUNT_PREFIX):
            subprocess.run(["userdel", entry.pw_name], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    missing = [p for p in (EUROSAT, SCENE_1999, SCENE_2002, LABELS) if not p.exists()]
    assert not missing, f"real data missing (expected beside the repository in {DATA}): {missing}"
    return DATA


@pytest.fixture(scope="session")
def chiapas_scene(data_dir) -> np.ndarray:
    """The 1999 Chiapas stack, ``(8, 250, 250)`` int16."""
    import rasterio

    with rasterio.open(SCENE_1999) as src:
        return src.read()


@pytest.fixture(scope="session")
def chiapas_labels(data_dir) -> np.ndarray:
    import rasterio

    with rasterio.open(LABELS) as src:
        return src.read(1)


@pytest.fixture(scope="session")
def chiapas_samples(tmp_path_factory, data_dir):
    """Pixel samples extracted from the real Chiapas scene and labels (an ExtractResult)."""
    from geoml_hub.extraction import extract_samples

    out = tmp_path_factory.mktemp("chiapas") / "samples"
    return extract_samples(SCENE_1999, LABELS, out, patch_size=1, class_names=CHIAPAS_NAMES)


@pytest.fixture(scope="session")
def pixel_model(tmp_path_factory, chiapas_samples):
    """A pixel classifier trained on the Chiapas samples (a TrainResult)."""
    from geoml_hub.training import train_model

    out = tmp_path_factory.mktemp("pixel_model") / "pixel.pt"
    return train_model(chiapas_samples.root, out, epochs=6, widths=(16,), seed=0, device="cpu")


PATCH_TREE_CLASSES = {"bare": 3, "crop": 7, "wood": 11}  # deliberately not 0..K-1


@pytest.fixture(scope="session")
def patch_tree(tmp_path_factory) -> Path:
    """Synthetic ``.npy`` tree: 3 separable classes, 4 bands, 9x9 patches, codes 3/7/11 via classes.json."""
    from helpers import class_samples, write_npy_tree

    rng = np.random.default_rng(42)
    spec = {}
    for k, name in enumerate(PATCH_TREE_CLASSES):
        arr = class_samples(rng, 16, 4, 9, level=100.0 + 40.0 * k, spread=2.0)
        spec[name] = [arr[:10], arr[10:]]
    return write_npy_tree(tmp_path_factory.mktemp("patch_tree") / "tree", spec, classes=PATCH_TREE_CLASSES)


@pytest.fixture(scope="session")
def patch_model(tmp_path_factory, patch_tree):
    """A 9x9 patch classifier trained on :func:`patch_tree` (a TrainResult)."""
    from geoml_hub.training import train_model

    out = tmp_path_factory.mktemp("patch_model") / "patch.pt"
    return train_model(patch_tree, out, epochs=15, batch_size=8, widths=(8,), seed=0, device="cpu")


@pytest.fixture(scope="session")
def patch_scene(tmp_path_factory) -> Path:
    """Synthetic 4-band float32 scene (45x53) whose areas look like the patch-tree classes."""
    from helpers import write_raster

    rng = np.random.default_rng(7)
    rows, cols = 45, 53
    levels = np.full((rows, cols), 100.0)
    levels[:, 18:36] = 140.0
    levels[20:, 36:] = 180.0
    data = levels[None] + np.arange(4.0).reshape(4, 1, 1) + rng.normal(0, 2.0, (4, rows, cols))
    return write_raster(tmp_path_factory.mktemp("patch_scene") / "scene.tif", data.astype(np.float32))
