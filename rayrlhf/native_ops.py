"""DeepSpeed's native ops that rayrlhf's learners load, compiled once at set-up.

DeepSpeed compiles its C++ ops just in time (torch's ``cpp_extension``, cached under
``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``): on CPU, its shared-memory
collective when the first process group forms (about 30 s on 2 cores) and its CPU Adam when
the first offloaded optimizer is built (about 45 s). Left to the first run, that time is spent
inside a learner actor, while its peers wait at the rendezvous. ``launch/setup.sh`` runs
``python -m rayrlhf.native_ops --ready FILE`` in the background while pip installs the rest
(pip keeps one core busy); FILE appears once this process has imported torch and DeepSpeed,
after which pip may replace other packages. A second run finds the ops built and returns in
seconds; a new virtual environment (another torch path) compiles them again.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# The ops each accelerator's learner loads: the shared-memory collective exists only on CPU
# (the CUDA path communicates through NCCL); CPU Adam serves learner.offload_optimizer.
OPS = {"cpu": ("ShareMemCommBuilder", "CPUAdamBuilder"), "cuda": ("CPUAdamBuilder",)}


def build(ready: Path | None = None) -> dict[str, float]:
    """Compile (or find compiled) the ops for this machine's accelerator; seconds per op."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.environ.setdefault("DS_ACCELERATOR", device)
    import torch.utils.cpp_extension  # noqa: F401  (what compiling imports, before `ready`)
    from deepspeed.accelerator import get_accelerator
    from deepspeed.ops import __compatible_ops__

    builders = [get_accelerator().create_op_builder(name) for name in OPS[device]]
    if ready is not None:
        ready.touch()
    seconds: dict[str, float] = {}
    for builder in builders:
        if builder is None or not __compatible_ops__.get(builder.NAME, False):
            continue  # DeepSpeed would not load it here either
        start = time.monotonic()
        builder.load(verbose=False)
        seconds[builder.NAME] = round(time.monotonic() - start, 1)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayrlhf.native_ops", description=__doc__)
    parser.add_argument("--ready", type=Path, help="file to create once the imports are done")
    args = parser.parse_args(argv)
    for name, secs in build(args.ready).items():
        print(f"[native_ops] {name}: {secs} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
