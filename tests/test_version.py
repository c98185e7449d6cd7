"""The version is decided in one place, pyproject.toml; these are the copies that must stay literal.

Python reads it from the installed distribution (``geoml_hub.__version__``,
``importlib.metadata``). Some files cannot read it at run time and carry it as text:

- ``helm/geoml-hub/Chart.yaml`` (``version``, ``appVersion``): Helm reads Chart.yaml as it is,
  without templating; the chart's templates take image tags from ``.Chart.AppVersion``;
- the Dockerfiles' ``ARG GEOML_HUB_VERSION`` default: a Dockerfile cannot read pyproject.toml
  (a build passes ``--build-arg GEOML_HUB_VERSION=...``, docs/admin.md);
- the profile images in ``src/geoml_hub/hub/profiles.yaml`` (the one profiles file; the chart renders it):
  KubeSpawner overrides are plain strings, and the chart passes its values on unrendered;
- examples in docs/admin.md and the all-on CI values of the chart.

This test finds each copy and fails when one differs from pyproject's version, so bumping the
version is: edit pyproject.toml, run this test, and update the files it names.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

import geoml_hub

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

# (file, regular expression whose group 1 is a copy of the version, how many copies at least)
COPIES = [
    ("helm/geoml-hub/Chart.yaml", r"^version: (\S+)$", 1),
    ("helm/geoml-hub/Chart.yaml", r'^appVersion: "([^"]+)"$', 1),
    ("images/hub/Dockerfile", r"^ARG GEOML_HUB_VERSION=(\S+)$", 1),
    ("images/notebook-cpu/Dockerfile", r"^ARG GEOML_HUB_VERSION=(\S+)$", 1),
    ("images/notebook-cuda/Dockerfile", r"^ARG GEOML_HUB_VERSION=(\S+)$", 1),
    ("images/wps/Dockerfile", r"^ARG GEOML_HUB_VERSION=(\S+)$", 1),
    ("src/geoml_hub/hub/profiles.yaml", r"geoml-hub/notebook-(?:cpu|cuda):(\S+)$", 2),
    ("helm/geoml-hub/ci/all-on-values.yaml", r"^\s+tag: (\d+\.\d+\.\d+[^-\s]*)-cuda", 1),
    ("docs/admin.md", r"geoml-hub/notebook-(?:cpu|cuda):(\d[\w.]*\d)", 2),
    ("docs/admin.md", r"\| `GEOML_HUB_VERSION` \| all \| pyproject's version \(`([^`]+)`\)", 1),
]


def test_python_reads_the_package_metadata():
    assert geoml_hub.__version__ == importlib.metadata.version("geoml-hub") == VERSION, (
        "the installed metadata is stale: reinstall (pip install -e .) after changing pyproject's version")
    init = (ROOT / "src" / "geoml_hub" / "__init__.py").read_text(encoding="utf-8")
    assert VERSION not in init


@pytest.mark.parametrize("path,pattern,least", COPIES, ids=[f"{p}:{r[:24]}" for p, r, _ in COPIES])
def test_literal_copies_equal_pyproject(path, pattern, least):
    found = re.findall(pattern, (ROOT / path).read_text(encoding="utf-8"), re.M)
    assert len(found) >= least, f"{path}: expected {least} copies of the version matching {pattern!r}"
    assert set(found) == {VERSION}, f"{path} says {sorted(set(found))}, pyproject.toml says {VERSION}"
