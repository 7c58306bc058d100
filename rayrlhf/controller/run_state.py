"""The driver's part of a checkpoint, for PPO and the supervised stages alike.

A checkpoint folder holds::

    learner/          each learner rank's part (DeepSpeed engines, rank-NNN.pt: RNG, counters)
    driver.json       step, policy version, where the logs stand, the prompt position, faults
    ledger.json       every sample trained so far (PPO only)
    driver_rng.pt     the driver's random generators
    rollout_weights/  vN.pt: the policy versions steps generated ahead use (max_staleness > 0)
    manifest.json     written last by :func:`rayrlhf.checkpoint.commit`

The prompt order is a pure function of the seed and the prompts (checked through the config and
the data digests), so the cursor (prompts taken so far: step × prompts_per_step, or more with
dynamic sampling) is the prompt source's whole position.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rayrlhf import checkpoint
from rayrlhf.buffer import ExperienceBuffer
from rayrlhf.metrics import LogPosition


@dataclass
class RunState:
    """What the driver needs to continue a run: the counters it keeps between steps."""

    step: int = 0  # steps completed (optimizer steps for a supervised stage)
    policy_version: int = 0
    prompt_cursor: int = 0  # prompts taken from the shuffled order so far (dynamic sampling)
    logs: LogPosition = LogPosition()
    faults: dict[str, Any] = field(default_factory=dict)  # FaultCounts' fields
    # Steps dispatched ahead of training (max_staleness > 0): step, first prompt, policy version.
    in_flight: list[dict[str, Any]] = field(default_factory=list)


def save_run_state(
    root: Path,
    state: RunState,
    buffer: ExperienceBuffer | None,
    save_learners: Callable[[Path], dict[str, dict[str, Any]]],
    fields: dict[str, Any],
    keep: int,
    save_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write and commit a checkpoint of ``state`` under ``root``; returns its folder.

    ``save_learners(folder)`` has every learner rank write and hash its part in ``folder``
    (their manifest entries, relative to ``folder``);
    ``save_extra(folder)`` writes anything else the trainer keeps (before the commit).
    """
    tmp = checkpoint.begin(root, state.step)
    (tmp / "learner").mkdir()
    hashed = save_learners(tmp / "learner")
    driver = {
        "step": state.step,
        "policy_version": state.policy_version,
        "logs": asdict(state.logs),
        "faults": state.faults,
        "prompts": {
            "next_step": state.step,
            "cursor": state.prompt_cursor,
            "in_flight": state.in_flight,
        },
    }
    (tmp / "driver.json").write_text(json.dumps(driver, indent=1))
    if buffer is not None:
        (tmp / "ledger.json").write_text(json.dumps(buffer.state_dict()))
    torch.save(checkpoint.rng_state(), tmp / "driver_rng.pt")
    if save_extra is not None:
        save_extra(tmp)
    learner = {f"learner/{name}": entry for name, entry in hashed.items()}
    return checkpoint.commit(tmp, state.step, fields, keep, learner).path


def learner_entries(found: checkpoint.Checkpoint) -> dict[str, dict[str, Any]]:
    """The manifest entries of a checkpoint's learner folder, relative to it (what each rank
    checks its own files against before loading them)."""
    prefix = "learner/"
    files = found.manifest["files"]
    return {k.removeprefix(prefix): v for k, v in files.items() if k.startswith(prefix)}


def load_run_state(path: Path, buffer: ExperienceBuffer | None) -> RunState:
    """Read the driver's part of the (verified) checkpoint at ``path``; fills ``buffer``."""
    driver = json.loads((path / "driver.json").read_text())
    if buffer is not None:
        buffer.load_state(json.loads((path / "ledger.json").read_text()))
    # Our own file, its hash checked against the manifest: not an untrusted pickle.
    checkpoint.set_rng_state(torch.load(path / "driver_rng.pt", weights_only=False))
    return RunState(
        step=int(driver["step"]),
        policy_version=int(driver["policy_version"]),
        prompt_cursor=int(driver["prompts"].get("cursor", 0)),
        logs=LogPosition(**driver["logs"]),
        faults=dict(driver["faults"]),
        in_flight=list(driver["prompts"].get("in_flight", [])),
    )
