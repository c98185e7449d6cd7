#!/usr/bin/env bash
# Builds the images of the test cluster offline with Debian's podman, and saves those the
# cluster runs as docker-archives for ../shared/k8s/load-image.sh.
#
#   bash tests/cluster/build-images.sh OUT_DIR
#
# - base: ../shared/k8s/debian-base.sh (Debian bookworm, cached), then a Python base with
#   Debian's python3 (tests/cluster/images/python-base); public base images cannot be pulled
#   here, so every images/*/Dockerfile gets BASE_IMAGE=that base (their pinned public default
#   stays for everyone else);
# - wheels: images/wheelhouse/ is filled on the host (pip through constraints.txt: the CPU
#   wheel torch==2.13.0; `npm pack` for Leaflet) and the Dockerfiles install from it alone
#   (PIP_NO_INDEX=1); images/wheelhouse/cuda/ holds a CUDA build of torch for the CUDA base;
# - the four images of images/ as localhost/geoml-hub/<name>:<version>, plus stand-ins for the
#   two upstream images the chart names (configurable-http-proxy, postgres), as
#   localhost/geoml-hub-ci/<name>;
# - notebook-cuda is built and its Python imports geoml_hub, but it is not saved: it cannot
#   run without a GPU.
#
# Writes OUT_DIR/<name>.tar and OUT_DIR/images.tsv (image, build seconds, size in MB).
# Layers stay in podman's storage: a second run on the same machine reuses them.
# Environment: GEOML_CI_CACHE (/var/cache/geoml-hub-ci), GEOML_K8S_KIT (../shared/k8s),
# PYTHON (.venv/bin/python, whose pip fills the wheelhouse).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "${1:?usage: build-images.sh OUT_DIR}")
CACHE=${GEOML_CI_CACHE:-/var/cache/geoml-hub-ci}
KIT=$(realpath "${GEOML_K8S_KIT:-../shared/k8s}")
PYTHON=${PYTHON:-.venv/bin/python}
export CONTAINERS_CONF=$PWD/tests/cluster/containers.conf
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
CHP_VERSION=$("$PYTHON" -c 'import yaml; print(yaml.safe_load(open("helm/geoml-hub/values.yaml"))["proxy"]["chp"]["image"]["tag"])')
CUDA_TORCH=2.14.1
mkdir -p "$OUT" "$CACHE"
log() { printf '[build-images %s] %s\n' "$(date +%T)" "$*"; }
printf 'image\tbuild_s\tsize_mb\n' > "$OUT/images.tsv"

# -- the Debian base (debootstrap, about 1-2 min; cached) --------------------------------------
if ! podman image exists localhost/debian-base:bookworm; then
    [ -s "$CACHE/debian-base.tar" ] || "$KIT/debian-base.sh" "$CACHE/debian-base.tar"
    podman load -q -i "$CACHE/debian-base.tar"
fi

build() { # name tag context containerfile [build args...]
    local name=$1 tag=$2 ctx=$3 file=$4 t0 t1 size; shift 4
    log "building $tag"
    t0=$(date +%s)
    podman build -q --layers --format docker -f "$file" -t "$tag" "$@" "$ctx" >/dev/null
    t1=$(date +%s)
    size=$(podman image inspect --format '{{.Size}}' "$tag")
    printf '%s\t%s\t%s\n' "$tag" $((t1 - t0)) $((size / 1000000)) >> "$OUT/images.tsv"
    log "built $tag in $((t1 - t0)) s, $((size / 1000000)) MB"
}
BASE=localhost/geoml-hub-ci/python-base:bookworm
build python-base "$BASE" . tests/cluster/images/python-base/Containerfile
BASE_PYTHON=$(podman run --rm "$BASE" python -c 'import platform; print(platform.python_version())')

# -- the wheelhouse: wheels for the base's Python (Debian's 3.11.2), resolved on the host --------
log "wheelhouse for Python $BASE_PYTHON: pip download (constraints.txt), npm pack"
WH=images/wheelhouse
pip_() { "$PYTHON" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; return "${PIPESTATUS[0]}"; }
# every requirement of the extras the images install (pyproject.toml, self-references expanded)
"$PYTHON" - > "$WH/requirements.txt" <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
def expand(names, seen):
    for name in names:
        if name not in seen:
            seen.add(name)
            for req in extras[name]:
                m = re.fullmatch(r"geoml-hub\[(.*)\]", req)
                yield from expand(m.group(1).split(","), seen) if m else [req]
print("\n".join(project["dependencies"] + list(expand(["all", "postgres", "kubernetes"], set()))))
PY
# packages published only as source: built once into wheels (pure Python)
pip_ wheel -q --no-deps -w "$WH" onetimepass
pip_ download -q --only-binary=:all: --python-version "$BASE_PYTHON" -c constraints.txt --find-links "$WH" \
    -d "$WH" 'setuptools>=68' wheel -r "$WH/requirements.txt"
pip_ download -q --only-binary=:all: --python-version "$BASE_PYTHON" -d "$WH/cuda" "torch==$CUDA_TORCH"
ls "$WH"/torch-2.13.0*.whl "$WH"/cuda/torch-"$CUDA_TORCH"*.whl >/dev/null
mkdir -p "$WH/npm"
for pkg in leaflet leaflet-draw; do
    v=$("$PYTHON" -c "import json,sys; print(json.load(open('package-lock.json'))['packages']['node_modules/$pkg']['version'])")
    [ -f "$WH/npm/$pkg-$v.tgz" ] || (cd "$WH/npm" && npm pack -q --loglevel=error "$pkg@$v" >/dev/null)
done
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
cp -r tests/cluster/images/proxy "$CTX/proxy"
npm install -q --no-audit --no-fund --loglevel=error --prefix "$CTX/proxy/chp" "configurable-http-proxy@$CHP_VERSION" >/dev/null

OFFLINE=(--build-arg "BASE_IMAGE=$BASE" --build-arg PIP_NO_INDEX=1 --build-arg "GEOML_HUB_VERSION=$VERSION")
build proxy "localhost/geoml-hub-ci/configurable-http-proxy:$CHP_VERSION" "$CTX/proxy" "$CTX/proxy/Containerfile"
build postgres localhost/geoml-hub-ci/postgres:15 tests/cluster/images/postgres tests/cluster/images/postgres/Containerfile
for name in hub wps notebook-cpu; do
    build "$name" "localhost/geoml-hub/$name:$VERSION" . "images/$name/Dockerfile" "${OFFLINE[@]}"
done
build cuda-base localhost/geoml-hub-ci/cuda-base:"$CUDA_TORCH" . tests/cluster/images/cuda-base/Containerfile \
    --build-arg "TORCH_VERSION=$CUDA_TORCH"
build notebook-cuda "localhost/geoml-hub/notebook-cuda:$VERSION" . images/notebook-cuda/Dockerfile \
    "${OFFLINE[@]}" --build-arg "BASE_IMAGE=localhost/geoml-hub-ci/cuda-base:$CUDA_TORCH"
podman run --rm "localhost/geoml-hub/notebook-cuda:$VERSION" \
    python -c "import geoml_hub.training, torch; assert torch.version.cuda; print('notebook-cuda: geoml_hub imports, torch', torch.__version__, 'CUDA', torch.version.cuda)"

# -- docker-archives of what the cluster runs ------------------------------------------------
for ref in "localhost/geoml-hub/hub:$VERSION" "localhost/geoml-hub/wps:$VERSION" \
           "localhost/geoml-hub/notebook-cpu:$VERSION" \
           "localhost/geoml-hub-ci/configurable-http-proxy:$CHP_VERSION" localhost/geoml-hub-ci/postgres:15; do
    name=${ref##*/}; name=${name%%:*}
    log "saving $ref"
    rm -f "$OUT/$name.tar"
    podman save -q --format docker-archive -o "$OUT/$name.tar" "$ref"
done
log "done: $OUT"
