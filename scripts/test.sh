#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite, real clients included.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
