#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (unit tier without Ray, then the integration tier
# with one local Ray). This is what CI runs. vLLM (for rollout.backend=vllm) is installed too:
# its tests run on tiny GPT-2 and Llama models (the real SmolLM2 goes through vLLM in the demo
# pipeline and in benchmarks/ppo_backends.py). MLflow and W&B too: the tracker tests log to a real
# local MLflow server and to W&B's offline files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --vllm --trackers
.venv/bin/ruff check rayrlhf tests benchmarks
.venv/bin/ruff format --check rayrlhf tests benchmarks
exec .venv/bin/python -m pytest -q --durations=20 "$@"
