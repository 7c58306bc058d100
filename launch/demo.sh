#!/usr/bin/env bash
# The main job on the embedded default: set up, then the whole RLHF pipeline on real models with
# a local Ray that rayrlhf starts itself, on the CPU: SFT of SmolLM2-135M-Instruct on review
# sentences, a MiniLM reward model from Pang & Lee preference pairs, PPO against it.
# Extra arguments go to `rayrlhf pipeline` (e.g. --set run.num_steps=4). Re-running skips the
# stages that already finished in runs/review-rlhf.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --demo
exec .venv/bin/rayrlhf pipeline launch/configs/review_pipeline.yaml "$@"
