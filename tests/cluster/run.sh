#!/usr/bin/env bash
# The tests on a real Kubernetes cluster, in one command (tests/cluster/README.md):
#
#   bash tests/cluster/run.sh [pytest arguments]
#
# starts the single-node Kubernetes v1.20.2 of ../shared/k8s, builds the images
# (build-images.sh) and imports them into its containerd, makes the volumes (hostPath
# PersistentVolumes; a copy of ../shared/data as the shared read-only data), runs
# tests/cluster against it and always tears everything down (../shared/k8s/down.sh).
#
# Without root, without the kit or without its Debian packages it says why and the tests are
# skipped with that reason, except under CI=true, where that fails. Exit status: pytest's.
# Environment: GEOML_K8S_KIT (../shared/k8s), GEOML_CLUSTER_WORK (a work dir, default a new
# one under /var/tmp; images and volumes, removed at the end), PYTHON (.venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PYTHON=${PYTHON:-.venv/bin/python}
KIT=${GEOML_K8S_KIT:-../shared/k8s}
STORAGE_CLASS=geoml-hostpath
t_start=$(date +%s)
log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*"; }

problem=""
if [ "$(id -u)" != 0 ]; then
    problem="tests/cluster/run.sh needs root (the Kubernetes kit of ../shared/k8s runs as root)"
elif [ ! -x "$KIT/up.sh" ]; then
    problem="no Kubernetes kit at $KIT (../shared/k8s/up.sh)"
else
    missing=""
    for c in etcd containerd runc ctr iptables conntrack ip dnsmasq umoci skopeo gcc xz curl openssl debootstrap podman; do
        command -v "$c" >/dev/null || missing="$missing $c"
    done
    [ -z "$missing" ] || problem="missing commands:$missing (apt-get install the packages of ../shared/k8s/README.md, debootstrap and podman; see .ci/run)"
fi
if [ -n "$problem" ]; then
    if [ "${CI:-}" = true ]; then
        echo "tests/cluster/run.sh: $problem" >&2
        exit 1
    fi
    log "skipping the cluster tests: $problem"
    GEOML_CLUSTER_SKIP="$problem" exec "$PYTHON" -m pytest tests/cluster "$@"
fi

KIT=$(realpath "$KIT")
WORK=${GEOML_CLUSTER_WORK:-$(mktemp -d /var/tmp/geoml-cluster.XXXXXX)}
mkdir -p "$WORK"
# the kit's dnsmasq runs as nobody and reads its hosts file under $R: every parent must be
# traversable (mktemp makes 0700)
chmod 0755 "$WORK"
export R=$WORK/k8s
cleanup() {
    rc=$?
    log "tearing down the cluster"
    "$KIT/down.sh" >"$WORK/down.log" 2>&1 || { tail -20 "$WORK/down.log"; log "down.sh failed"; }
    if [ "$rc" != 0 ] && [ -d "$R/log" ]; then  # keep the cluster's logs of a failed run
        keep=/var/tmp/geoml-cluster-logs.$(date +%Y%m%d-%H%M%S)
        cp -r "$R/log" "$keep" && log "the cluster's logs are kept in $keep"
    fi
    [ -n "${GEOML_CLUSTER_KEEP_WORK:-}" ] || rm -rf --one-file-system "$WORK"
    log "whole run: $(( $(date +%s) - t_start )) s"
}
trap cleanup EXIT

log "building the images (tests/cluster/build-images.sh)"
t0=$(date +%s)
PYTHON=$PYTHON GEOML_K8S_KIT=$KIT bash tests/cluster/build-images.sh "$WORK/images" || { log "building the images failed"; exit 1; }
t_build=$(( $(date +%s) - t0 ))
column -t "$WORK/images/images.tsv"

log "starting the cluster ($KIT/up.sh)"
t0=$(date +%s)
"$KIT/up.sh" >"$WORK/up.log" 2>&1 || { tail -30 "$WORK/up.log"; log "up.sh failed"; exit 1; }
. "$R/env"
for tar in "$WORK"/images/*.tar; do
    "$KIT/load-image.sh" "$tar" >/dev/null || { log "load-image.sh $tar failed"; exit 1; }
    rm -f "$tar"
done
t_up=$(( $(date +%s) - t0 ))

log "volumes: the shared data (read-only) and hostPath PersistentVolumes of class $STORAGE_CLASS"
mkdir -p "$WORK/volumes"
# world-writable on the host: only the pods' read-only mounts keep them from writing
cp -r "$ROOT/../shared/data" "$WORK/volumes/data" && chmod -R a+rX "$WORK/volumes/data" && chmod 0777 "$WORK/volumes/data"
{
    cat <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: geoml-test-data}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: $WORK/volumes/data, type: Directory}
YAML
    # the chart's claims (hub database, PostgreSQL, WPS outputs, results) and one home per user;
    # no provisioner here, so the directories are made world-writable (pods run as 1000, 70, 65534)
    for i in $(seq 1 10); do
        mkdir -p "$WORK/volumes/pv$i" && chmod 0777 "$WORK/volumes/pv$i"
        cat <<YAML
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: geoml-pv$i}
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: $STORAGE_CLASS
  hostPath: {path: $WORK/volumes/pv$i, type: Directory}
YAML
    done
} | kubectl apply -f - >/dev/null || { log "kubectl apply of the PersistentVolumes failed"; exit 1; }

log "running tests/cluster"
t0=$(date +%s)
export GEOML_CLUSTER_IMAGE_PREFIX=localhost GEOML_CLUSTER_STORAGE_CLASS=$STORAGE_CLASS \
       GEOML_CLUSTER_DATA_PV=geoml-test-data GEOML_CLUSTER_VALUES=$ROOT/tests/cluster/kit-values.yaml \
       GEOML_CLUSTER_REQUIRED=1
"$PYTHON" -m pytest tests/cluster -v -p no:cacheprovider "$@"
rc=$?
t_tests=$(( $(date +%s) - t0 ))
log "images ${t_build} s, cluster start and image import ${t_up} s, tests ${t_tests} s (pytest exit $rc)"
exit $rc
