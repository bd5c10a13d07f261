#!/usr/bin/env bash
# Builds istiod (pilot-discovery) from the Go module proxy, for the benchmarks only (not CI):
#   $WAYMESH_ISTIOD_CACHE/<ref>/pilot-discovery     (default ~/.cache/waymesh/istiod)
#   $WAYMESH_ISTIOD_CACHE/<ref>/crds/{istio,gateway-api}.yaml   (the CRDs istiod watches)
# Reuses them when present (instant). Cold build: ~27 min on the shared 2-core machine under load.
# Go: any Go >= 1.21 fetches the toolchain go.mod asks for (GOTOOLCHAIN=auto).
# Usage: benchmarks/istiod/build.sh [--print-binary] [--force]
set -euo pipefail

REF=v0.0.0-20260826214018-9739e10eb9d7   # istio.io/istio master of 2026-08-26 (1.30-dev)
GATEWAY_API=v1.5.1                       # what that istio's go.mod requires
cache=${WAYMESH_ISTIOD_CACHE:-$HOME/.cache/waymesh/istiod}/$REF
binary=$cache/pilot-discovery

force=0
for arg in "$@"; do
  case $arg in
    --print-binary) echo "$binary"; exit 0 ;;
    --force) force=1 ;;
    *) echo "usage: $0 [--print-binary] [--force]" >&2; exit 2 ;;
  esac
done
if [ "$force" = 0 ] && [ -x "$binary" ] && [ -s "$cache/crds/istio.yaml" ] && [ -s "$cache/crds/gateway-api.yaml" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "build.sh: needs Go >= 1.21 (e.g. apt-get install golang-go, or go.dev/dl)" >&2; exit 1; }

start=$(date +%s)
mkdir -p "$cache/build" "$cache/crds"
cd "$cache/build"
# A throwaway module that requires istio at REF and builds its pilot-discovery command. The
# replace lines pin the versions istio's own go.mod pinned at that commit (a plain `go get` picks
# newer go-control-plane/api modules that no longer compile with it).
cat >go.mod <<GOMOD
module example.com/istiodbuild

go 1.26.0

replace (
	github.com/agentgateway/agentgateway/api => github.com/agentgateway/agentgateway/api v0.0.0-20260501213430-773586679f1c
	github.com/envoyproxy/go-control-plane/contrib => github.com/envoyproxy/go-control-plane/contrib v1.36.1-0.20260713214202-ca8ce173c36f
	github.com/envoyproxy/go-control-plane/envoy => github.com/envoyproxy/go-control-plane/envoy v1.37.1-0.20260418153000-ae8637bdda9d
	istio.io/api => istio.io/api v1.30.8
	istio.io/client-go => istio.io/client-go v1.30.8
)
GOMOD
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "istio.io/istio/pilot/cmd/pilot-discovery"
GO
export GOFLAGS=-mod=mod GOTOOLCHAIN=auto CGO_ENABLED=0
go get "istio.io/istio@$REF"
go mod tidy
go build -trimpath -ldflags "-s -w" -o "$binary.tmp" istio.io/istio/pilot/cmd/pilot-discovery
mv "$binary.tmp" "$binary"

modcache=$(go env GOMODCACHE)
go mod download "sigs.k8s.io/gateway-api@$GATEWAY_API"
cp "$modcache/istio.io/istio@$REF/manifests/charts/base/files/crd-all.gen.yaml" "$cache/crds/istio.yaml"
for f in "$modcache/sigs.k8s.io/gateway-api@$GATEWAY_API"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
  case $f in *vap_*) continue ;; esac   # a ValidatingAdmissionPolicy, not a CRD
  echo "---"; cat "$f"
done >"$cache/crds/gateway-api.yaml"
printf '{"ref": "%s", "build_seconds": %d}\n' "$REF" $(( $(date +%s) - start )) >"$cache/build.json"
echo "build.sh: istiod built in $(( $(date +%s) - start )) s: $binary" >&2
