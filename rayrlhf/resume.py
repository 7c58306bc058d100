"""Which checkpoint a run resumes from, and what it must still agree with.

A resumed run must compute what the stopped run would have computed: every config field that
decides the math (learning rates, KL settings, seed, data, model, batch shapes) must be the same,
and so must the data files' contents. Which fields those are is :mod:`rayrlhf.config.results`'
rule; where and how the run executes may change, and so may its length.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rayrlhf.checkpoint import Checkpoint, CheckpointError, file_digest, latest
from rayrlhf.config.results import changed_fields, flatten


def data_digests(tree: Any) -> dict[str, str]:
    """sha256 of every data file the tree names (model folders are folders: not included)."""
    found: dict[str, str] = {}
    for value in flatten(tree).values():
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
    ZeRO stage) now (the rank count may differ from the checkpoint's: it is resharded),
    ``section`` the dotted name of the learner section, for the messages;
    ``data`` the data files' digests now, when the caller has them already.
    """
    saved = checkpoint.manifest
    if saved["zero_stage"] != ranks[1]:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} was written under ZeRO-{saved['zero_stage']}; this "
            f"config has ZeRO-{ranks[1]}. Resume with {section}.zero_stage="
            f"{saved['zero_stage']} (the rank count may change: the state is resharded; a "
            "change of ZeRO stage is not, as no test covers every pair of stages and their "
            "offload settings), or set run.resume=never to start afresh"
        )
    if saved["zero_stage"] == 3 and saved["world_size"] != ranks[0]:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} was written by {saved['world_size']} learner ranks "
            f"under ZeRO-3; this config has {ranks[0]}. A ZeRO-3 checkpoint resumes on the rank "
            f"count that wrote it ({section}.num_ranks={saved['world_size']}): resharding is "
            "done and tested for ZeRO-0/1/2 only (setting ZeRO-3's partitioned masters failed "
            "its check), or set run.resume=never to start afresh"
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


def discard(root: Path) -> None:
    """Remove the checkpoints under ``root``: ``run.resume = never`` starts afresh."""
    shutil.rmtree(root, ignore_errors=True)


def find(root: Path, policy: str) -> Checkpoint | None:
    """The checkpoint a run with ``run.resume = policy`` starts from (None: start afresh).

    A lookup only: ``never`` finds none (the caller discards the old ones); ``must`` refuses to
    start without one; ``auto`` takes the newest, and refuses a damaged one by name rather than
    silently starting afresh.
    """
    if policy == "never":
        return None
    found = latest(root)
    if found is None and policy == "must":
        raise CheckpointError(f"run.resume=must, but {root} holds no committed checkpoint")
    return found


def starting_checkpoint(
    root: Path,
    policy: str,
    tree: dict[str, Any],
    ranks: tuple[int, int],
    section: str,
    extra_free: set[str] = frozenset(),
    data: dict[str, str] | None = None,
) -> Checkpoint | None:
    """Where a run starts: the checkpoint :func:`find` gives, refused (before any actor starts)
    when the config or data now would compute something else; ``run.resume = never`` discards
    the old checkpoints first. The arguments are :func:`check_compatible`'s."""
    if policy == "never":
        discard(root)
    found = find(root, policy)
    if found is not None:
        check_compatible(found, tree, ranks, section, extra_free, data)
    return found
