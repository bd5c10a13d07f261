#!/usr/bin/env bash
# Runs the whole test suite: the default run, then the suites marked slow. Installs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
. .venv/bin/activate
.venv/bin/ruff check src tests benchmarks
# Exit code 5 (no tests collected) fails the run, as any other non-zero code does.
pytest -q "$@"
pytest -q -m slow "$@"
