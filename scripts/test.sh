#!/usr/bin/env bash
# The README's test command: set up (venv, dependencies, dataset), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
