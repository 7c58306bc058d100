#!/usr/bin/env bash
# The tool demo: SmolLM2-135M-Instruct learns to use a calculator on arithmetic word problems.
#   bash launch/arith_tools.sh [--set key=value ...]
# Sets up .venv and the policy model (once), writes the problems (once, from a seed), runs the
# pipeline (SFT warm-up on tool-use traces, then GRPO with the verifier's reward; each sample a
# multi-turn episode), then prints held-out accuracy with and without the tool, before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --smollm2
DATA="$HOME/.cache/rayrlhf/data/arith"
[ -f "$DATA/sft.jsonl" ] || .venv/bin/python -m rayrlhf.demo.arith_data --out "$DATA"
.venv/bin/rayrlhf pipeline launch/configs/arith_tools.yaml "$@"
.venv/bin/python -m rayrlhf.demo.arith_report launch/configs/arith_tools.yaml "$@"
