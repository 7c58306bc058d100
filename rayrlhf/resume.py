"""Which checkpoint a run resumes from, and what it must still agree with.

A resumed run must compute what the stopped run would have computed: every config field that
decides the math (learning rates, KL settings, seed, data, model, batch shapes) must be the same,
and so must the data files' contents. Where and how the run executes may change: resources,
worker counts, timeouts, restart limits, logging, and the number of steps (to extend a run).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rayrlhf.checkpoint import Checkpoint, CheckpointError, file_digest, latest

# Leaves that may differ anywhere in the tree: placement and resources.
FREE_LEAVES = {"num_cpus", "num_gpus", "placement", "master_port"}
# Whole fields and sections that may differ: run length, survival, logging, worker counts.
FREE_PATHS = {
    "run.name",
    "run.output_dir",
    "run.num_steps",
    "run.progress_bar",
    "run.log_samples",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.resume",
    "run.max_worker_restarts",
    "run.max_learner_restarts",
    "rollout.num_workers",
    "reward.num_workers",
    "reference.num_workers",
    "timeouts",
    "weight_sync",  # how weights travel, not what they are
    "eval",  # held-out evaluation reads the policy, it does not train it
}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _free(path: str, extra: set[str]) -> bool:
    parts = path.split(".")
    if parts[-1] in FREE_LEAVES:
        return True
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
    return bool(prefixes & (FREE_PATHS | extra))


def changed_fields(saved: dict[str, Any], now: dict[str, Any], extra_free: set[str]) -> list[str]:
    """Dotted paths whose values differ between two config trees and decide the math."""
    a, b = _flatten(saved), _flatten(now)
    differ = [p for p in set(a) | set(b) if a.get(p, "<unset>") != b.get(p, "<unset>")]
    return sorted(p for p in differ if not _free(p, extra_free))


def data_digests(tree: Any) -> dict[str, str]:
    """sha256 of every data file the tree names (model folders are folders: not included)."""
    found: dict[str, str] = {}
    for value in _flatten(tree).values():
        if isinstance(value, str) and os.path.isfile(value):
            found[value] = file_digest(Path(value))
    return found


def check_compatible(
    checkpoint: Checkpoint,
    tree: dict[str, Any],
    ranks: tuple[int, int],
    section: str,
    extra_free: set[str] = frozenset(),
    data: dict[str, str] | None = None,
) -> None:
    """Refuse to resume from ``checkpoint`` with a config that would compute something else.

    ``tree`` is the part of the config that decides the math; ``ranks`` is (learner ranks,
    ZeRO stage) now, ``section`` the dotted name of the learner section, for the messages;
    ``data`` the data files' digests now, when the caller has them already.
    """
    saved = checkpoint.manifest
    if (saved["world_size"], saved["zero_stage"]) != ranks:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} was written by {saved['world_size']} learner ranks "
            f"under ZeRO-{saved['zero_stage']}; this config has {ranks[0]} under ZeRO-{ranks[1]}. "
            f"Resume with {section}.num_ranks={saved['world_size']} and "
            f"{section}.zero_stage={saved['zero_stage']} (another rank count would need "
            "DeepSpeed's universal checkpoint conversion, which rayrlhf does not do), or set "
            "run.resume=never to start afresh"
        )
    changed = changed_fields(saved["config"], tree, set(extra_free) | {f"{section}.num_ranks"})
    if changed:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} was written with another value of "
            f"{', '.join(changed)}: resuming would not continue the same run. Restore the "
            "value, or set run.resume=never (or another run.name) to start afresh"
        )
    now = data_digests(tree) if data is None else data
    for path, digest in saved.get("data", {}).items():
        if now.get(path) != digest:
            raise CheckpointError(
                f"checkpoint {checkpoint.path}: data file {path} changed since it was written "
                "(or is gone); resuming would train on other data"
            )


def find(root: Path, policy: str) -> Checkpoint | None:
    """The checkpoint a run with ``run.resume = policy`` starts from (None: start afresh).

    ``never`` removes the old checkpoints; ``must`` refuses to start without one; ``auto`` takes
    the newest, and refuses a damaged one by name rather than silently starting afresh.
    """
    if policy == "never":
        shutil.rmtree(root, ignore_errors=True)
        return None
    found = latest(root)
    if found is None and policy == "must":
        raise CheckpointError(f"run.resume=must, but {root} holds no committed checkpoint")
    return found
