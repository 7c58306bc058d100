#!/usr/bin/env bash
# Build the few wheels the in-process GPU check (benchmarks/gpu_inprocess.py) needs beyond the
# GPU machine's torch and transformers, into one folder small enough to travel with the working
# tree (the device tool carries at most 64 MiB in all; that machine reaches no package index).
#   bash launch/gpu_wheels.sh                  # → build/gpu_wheels (ignored by git: build/)
#   PYVER=3.11 bash launch/gpu_wheels.sh       # for another Python there (default 3.12)
# Environment: PYVER (the GPU machine's Python, X.Y), PLATFORMS (manylinux tags, space-separated),
# OUT (the folder), LIMIT_MIB (refuse a bigger folder). Versions are the ones installed in
# ./.venv, so the GPU runs what the tests here ran. Then carry build/gpu_wheels and run there:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site build/gpu_wheels/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PYVER=${PYVER:-3.12}  # the H200 image's python3 is 3.12 (device KINDS.md), not this venv's 3.11
PLATFORMS=${PLATFORMS:-"manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64"}
OUT=${OUT:-build/gpu_wheels}
LIMIT_MIB=${LIMIT_MIB:-48}  # leaves room for the working tree in the 64 MiB that travel
# Beyond torch, transformers and numpy: DeepSpeed's needs (einops hjson msgpack ninja psutil
# py-cpuinfo pydantic), pydantic's (annotated-types typing-inspection typing-extensions), peft
# and its accelerate (the learner imports rayrlhf.lora, hence peft, even without LoRA), pyyaml
# (the config loader). Several are in the GPU image already; carrying them costs a few MiB and
# removes the guess about their versions.
BINARY="pydantic pydantic-core annotated-types typing-inspection typing-extensions hjson einops
msgpack ninja psutil py-cpuinfo pyyaml peft accelerate"

version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

rm -rf "$OUT" && mkdir -p "$OUT"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
PIP=("$PY" -m pip -q --disable-pip-version-check)

# rayrlhf itself (no dependencies: Ray, datasets, tensorboard... are not needed in-process).
# The check imports the travelled tree first anyway; the wheel is for other in-process scripts.
"${PIP[@]}" wheel --no-deps --no-build-isolation -w "$OUT" .

# DeepSpeed ships as an sdist only: build a wheel with no ops compiled (DS_BUILD_OPS=0; the
# learner uses torch's AdamW, so no op is ever JIT-built). Built against this venv's torch.
ds=$(version deepspeed)
"${PIP[@]}" download --no-deps --no-binary :all: -d "$tmp" "deepspeed==$ds"
DS_BUILD_OPS=0 DS_ACCELERATOR=cuda "${PIP[@]}" wheel --no-deps --no-build-isolation \
  -w "$OUT" "$tmp/deepspeed-$ds.tar.gz" >"$tmp/ds.log" 2>&1 || { tail -20 "$tmp/ds.log"; exit 1; }

# Binary wheels for the GPU machine's Python and platform (pure ones match any).
plat=()
for p in $PLATFORMS; do plat+=(--platform "$p"); done
specs=()
for name in $BINARY; do specs+=("$name==$(version "$name")"); done
"${PIP[@]}" download --no-deps --only-binary=:all: --implementation cp --python-version "$PYVER" \
  "${plat[@]}" -d "$OUT" "${specs[@]}"

bytes=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "wheels in $OUT for cp${PYVER/./} (${bytes} bytes, ${mib} MiB):"
ls -1 "$OUT"
if [ "$mib" -gt "$LIMIT_MIB" ]; then
  echo "launch/gpu_wheels.sh: $OUT is $mib MiB, over LIMIT_MIB=$LIMIT_MIB" >&2
  exit 1
fi
echo "carry: $OUT    install on the GPU machine:"
echo "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $OUT/*.whl && export PYTHONPATH=/tmp/site"
