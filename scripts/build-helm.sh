#!/usr/bin/env bash
# Builds helm (v3, for the chart tests: `helm template charts/waymesh`) from the Go module proxy
# into $WAYMESH_KUBE_CACHE/helm-<version>/bin/helm (default ~/.cache/waymesh/kube). Reuses it
# when it is there and reports the right version. Usage: scripts/build-helm.sh [--print-bin]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

HELM_VERSION=3.22.0
cache_root=${WAYMESH_KUBE_CACHE:-$HOME/.cache/waymesh/kube}
bin=$cache_root/helm-$HELM_VERSION/bin

if [ "${1:-}" = "--print-bin" ]; then echo "$bin/helm"; exit 0; fi
if [ -x "$bin/helm" ] && "$bin/helm" version --short 2>/dev/null | grep -q "^v$HELM_VERSION"; then
  exit 0
fi

. "$here/go-env.sh"
find_go "$cache_root"
start=$(date +%s)
echo "build-helm: building helm v$HELM_VERSION with $($gobin version)" >&2
mkdir -p "$bin"
# helm's go.mod has no replace directives, so `go install module@version` builds it as released;
# the full version string comes from ldflags, as helm's Makefile sets it.
GOBIN=$bin "$gobin" install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
"$bin/helm" version --short | grep -q "^v$HELM_VERSION"
echo "build-helm: done in $(($(date +%s) - start)) s: $bin/helm" >&2
