# Sourced by the build-*.sh scripts: finds a Go that can build current modules, or fetches one.
# Sets $gobin. Debian's golang-go (1.19) is too old; Go >= 1.21 fetches whatever toolchain a
# go.mod asks for (GOTOOLCHAIN=auto); with no usable Go at all, the toolchain itself is fetched
# from the module proxy (the module golang.org/toolchain, as `go` itself does).
GO_BOOTSTRAP=${GO_BOOTSTRAP:-1.26.8}

go_ok() { # a go binary that understands GOTOOLCHAIN (>= 1.21)
  local v major rest minor
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}
  major=${v%%.*} rest=${v#*.}
  minor=${rest%%[.rc]*}
  [ "$major" -gt 1 ] || { [ "$major" = 1 ] && [ "$minor" -ge 21 ]; }
}

find_go() { # $1: cache directory for a fetched toolchain
  gobin=""
  local cand
  for cand in "${GO:-}" "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -n "$cand" ] && [ -x "$cand" ] && go_ok "$cand"; then gobin=$cand; break; fi
  done
  if [ -z "$gobin" ]; then
    local proxy arch tc
    proxy=${GOPROXY:-https://proxy.golang.org}; proxy=${proxy%%,*}
    arch=$(uname -m); case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
    tc=$1/go$GO_BOOTSTRAP
    if [ ! -x "$tc/bin/go" ]; then
      echo "no Go >= 1.21 found; fetching go$GO_BOOTSTRAP from $proxy" >&2
      rm -rf "$tc.tmp"; mkdir -p "$tc.tmp"
      curl -fsSL "$proxy/golang.org/toolchain/@v/v0.0.1-go$GO_BOOTSTRAP.linux-$arch.zip" -o "$tc.tmp/tc.zip"
      (cd "$tc.tmp" && python3 -m zipfile -e tc.zip .)
      rm -rf "$tc"
      mv "$tc.tmp/golang.org/toolchain@v0.0.1-go$GO_BOOTSTRAP.linux-$arch" "$tc"
      rm -rf "$tc.tmp"
      chmod +x "$tc/bin/"* "$tc/pkg/tool/"*/* 2>/dev/null || true
    fi
    gobin=$tc/bin/go
  fi
  export GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false CGO_ENABLED=0
}
