#!/usr/bin/env bash
# The main job on the embedded default: set up, then PPO on SmolLM2-135M-Instruct with a local
# Ray that rayrlhf starts itself, on the CPU. Extra arguments go to `rayrlhf train`
# (e.g. --set run.num_steps=4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --demo
exec .venv/bin/rayrlhf train launch/configs/smollm2_sentiment.yaml "$@"
