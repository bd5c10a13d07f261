#!/usr/bin/env bash
# Builds the real Kubernetes API server and etcd that the Kubernetes-mode tests run against, from
# the Go module proxy, into a cache outside the source tree:
#   $WAYMESH_KUBE_CACHE/<k8s version>/bin/{kube-apiserver,etcd}   (default ~/.cache/waymesh/kube)
# Reuses the binaries when they are there and their version stamp matches (well under a second);
# otherwise builds them. Measured (2 cores): empty Go build cache 738 s of CPU, i.e. ~6 min idle,
# 37 min wall under a load of ~12; with Go's build cache warm 90 s; reuse 0.02 s. Module
# downloads come on top on a fresh machine: with empty module and build caches (and a Go
# toolchain present) one run took 17 min 26 s wall, 805 s of CPU, 932 MB of modules, peak RSS
# 2.3 GB, on 2 cores shared with benchmarks (load 4-8).
#
# Why build: there is no kube-apiserver package in Debian, and Debian's etcd-server (3.4) is older
# than what kube-apiserver 1.37 supports, so etcd is built the same way.
# Go: see go-env.sh (Debian's golang-go is too old; a newer toolchain comes from the module proxy).
# Usage: scripts/build-kube.sh [--print-bin-dir] [--force]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

K8S_VERSION=1.37.2                      # k8s.io/kubernetes v1.37.2, staging modules v0.37.2
ETCD_VERSION=3.7.3                      # go.etcd.io/etcd/server/v3
STAMP="kube-apiserver v$K8S_VERSION etcd v$ETCD_VERSION recipe 1"

cache_root=${WAYMESH_KUBE_CACHE:-$HOME/.cache/waymesh/kube}
top=$cache_root/$K8S_VERSION
bin=$top/bin
build=$top/build

force=0
for arg in "$@"; do
  case $arg in
    --print-bin-dir) echo "$bin"; exit 0 ;;
    --force) force=1 ;;
    *) echo "usage: $0 [--print-bin-dir] [--force]" >&2; exit 2 ;;
  esac
done

# Reuse: the stamp file says which recipe built the binaries. Binaries from before the stamp
# existed are accepted if they report the right versions.
if [ "$force" = 0 ] && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ]; then
  if [ "$(cat "$bin/STAMP" 2>/dev/null)" = "$STAMP" ]; then
    exit 0
  fi
  if "$bin/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes v$K8S_VERSION" \
    && "$bin/etcd" --version 2>/dev/null | grep -qx "etcd Version: $ETCD_VERSION"; then
    echo "$STAMP" >"$bin/STAMP"
    exit 0
  fi
fi

log() { echo "build-kube: $*" >&2; }
start=$(date +%s)

# --- Go ------------------------------------------------------------------------------------------
. "$here/go-env.sh"
find_go "$cache_root"
log "using $($gobin version) (GOTOOLCHAIN=auto fetches a newer one if a go.mod asks)"

# --- kube-apiserver ------------------------------------------------------------------------------
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging/...;
# a module that imports it must pin each of them to the matching release itself.
mkdir -p "$build/kube-apiserver" "$build/etcd" "$bin"
cd "$build/kube-apiserver"
if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes v$K8S_VERSION" go.mod; then
  rm -f go.mod go.sum
  "$gobin" mod init waymesh.test/kubeapiserver >/dev/null 2>&1
  upstream=$("$gobin" mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging=$(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream" | awk '{print $1}' | sort -u)
  [ -n "$staging" ] || { log "no staging replaces found in $upstream"; exit 1; }
  args=()
  for m in $staging; do args+=("-replace=$m=$m@v0.${K8S_VERSION#1.}"); done
  "$gobin" mod edit "${args[@]}" -require="k8s.io/kubernetes@v$K8S_VERSION"
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >tools.go
  log "resolving k8s.io/kubernetes v$K8S_VERSION dependencies"
  "$gobin" mod tidy
fi
# The version flags normally come from k8s's hack/lib/version.sh (git metadata).
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=${K8S_VERSION%%.*}"
ldflags+=" -X $vpkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $vpkg.gitTreeState=clean"
ldflags+=" -X $vpkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "building kube-apiserver v$K8S_VERSION (several minutes)"
"$gobin" build -trimpath -ldflags "$ldflags" -o "$bin/kube-apiserver.new" k8s.io/kubernetes/cmd/kube-apiserver

# --- etcd ----------------------------------------------------------------------------------------
cd "$build/etcd"
if [ ! -f go.mod ] || ! grep -q "go.etcd.io/etcd/server/v3 v$ETCD_VERSION" go.mod; then
  rm -f go.mod go.sum
  "$gobin" mod init waymesh.test/etcd >/dev/null 2>&1
  "$gobin" mod edit -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
  "$gobin" mod tidy
fi
log "building etcd v$ETCD_VERSION"
"$gobin" build -trimpath -ldflags "-s -w" -o "$bin/etcd.new" go.etcd.io/etcd/server/v3

mv "$bin/kube-apiserver.new" "$bin/kube-apiserver"
mv "$bin/etcd.new" "$bin/etcd"
"$bin/kube-apiserver" --version | grep -qx "Kubernetes v$K8S_VERSION"
"$bin/etcd" --version | grep -qx "etcd Version: $ETCD_VERSION"
echo "$STAMP" >"$bin/STAMP"
log "done in $(($(date +%s) - start)) s: $bin"
