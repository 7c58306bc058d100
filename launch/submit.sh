#!/usr/bin/env bash
# Submit `rayrlhf train CONFIG [--set key=value ...]` to a running Ray cluster as a Ray job
# (COMMAND=pipeline submits `rayrlhf pipeline CONFIG ...` instead: SFT → reward model → PPO).
#   RAY_ADDRESS=http://HEAD:8265 bash launch/submit.sh launch/configs/smollm2_sentiment.yaml
# Ray 2.60 heads use token authentication: the token is read from ~/.ray/auth_token (or
# RAY_AUTH_TOKEN); RAY_AUTH_MODE=token makes the CLI send it.
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=${RAY:-ray}
[ -x .venv/bin/ray ] && RAY=.venv/bin/ray
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
exec "$RAY" job submit --address "$RAY_ADDRESS" \
  --runtime-env "${RUNTIME_ENV:-launch/runtime_env.yaml}" \
  -- python -m rayrlhf.cli "${COMMAND:-train}" "$@"
