#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (unit tier without Ray, then the integration tier
# with one local Ray). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
.venv/bin/ruff check rayrlhf tests benchmarks
.venv/bin/ruff format --check rayrlhf tests benchmarks
exec .venv/bin/python -m pytest -q "$@"
