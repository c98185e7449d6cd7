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
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import (ACCOUNT_PREFIX, CHIAPAS, CHIAPAS_COUNTS, CHIAPAS_NAMES, DATA, EUROSAT,  # noqa: E402,F401
                     EUROSAT_COUNTS, LABELS, SCENE_1999, SCENE_2002)


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
    return train_model(chiapas_samples.root, out, model="cnn", epochs=6, widths=(16,), seed=0, device="cpu")


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
    return train_model(patch_tree, out, model="cnn", epochs=15, batch_size=8, widths=(8,), seed=0, device="cpu")


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


# -- job databases: SQLite and a real PostgreSQL (tests/pg.py) -------------------------------
@pytest.fixture(scope="module")
def postgres():
    from pg import Postgres

    with Postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request):
    """``None`` (the default SQLite file) or the URL of a fresh database on a real PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    pg = request.getfixturevalue("postgres")
    import sqlalchemy as sa

    name = f"wps_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    eng = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    eng.dispose()
    yield pg.url.rsplit("/", 1)[0] + "/" + name


# -- a hub's users and a kube config, without a hub (tests/test_profiles.py, test_helm.py) ------
@pytest.fixture
def hub_users():
    """A JupyterHub database in memory with bob (no group), gina (gpu-users) and ada (admin)."""
    from jupyterhub import orm
    from jupyterhub.user import User

    db = orm.new_session_factory("sqlite:///:memory:")()
    group = orm.Group(name="gpu-users")
    db.add(group)
    users = {}
    for name in ("bob", "gina", "ada"):
        u = orm.User(name=name)
        db.add(u)
        users[name] = u
    users["gina"].groups.append(group)
    users["ada"].admin = True
    db.commit()
    yield {name: User(u, {}) for name, u in users.items()}
    db.close()


@pytest.fixture
def kube_config(tmp_path, monkeypatch):
    """A throw-away kube config (its server is never contacted), as KubeSpawner's constructor
    always loads one. kubernetes_asyncio reads $KUBECONFIG at import: patch both."""
    pytest.importorskip("kubespawner")
    from kubernetes_asyncio.config import kube_config as kc

    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
           "clusters": [{"name": "fake", "cluster": {"server": "https://127.0.0.1:9"}}],
           "users": [{"name": "fake", "user": {"token": "fake"}}],
           "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "geoml"}}]}
    path = tmp_path / "kubeconfig"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kc, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path
