#!/usr/bin/env bash
# Regenerate the Python code for waymesh's own protos (the node proxy's workload feed).
# grpcio-tools is needed only here, so it lives in a throwaway venv, not in the project's.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TMPDIR:-/tmp}/waymesh-protoc"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'grpcio-tools>=1.85,<2'; }
"$venv/bin/python" -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src src/waymesh/nodeproxy/api/workload.proto
echo "regenerated src/waymesh/nodeproxy/api/workload_pb2.py{,i}"
