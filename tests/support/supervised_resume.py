"""Shared by the offline-stage tests: an uninterrupted run beside a resumed one, in process."""

from __future__ import annotations

from pathlib import Path

from rayrlhf.roles.supervised import SupervisedLearner


def setup_learner(config, stage: str) -> SupervisedLearner:
    """Rank 0 of a one-rank learner group for ``stage``, set up in this process."""
    one = SupervisedLearner(config, stage, 0)
    one.setup(*one.rendezvous_address())
    return one


def straight_and_resumed(
    config, stage: str, folder: Path, steps: int = 4
) -> tuple[SupervisedLearner, SupervisedLearner]:
    """``steps`` steps in one learner (checkpointed half-way into ``folder``), and a new learner
    that loads that checkpoint and takes the second half: the two should end equal."""
    half = steps // 2
    first = setup_learner(config, stage)
    for step in range(half):
        first.train_step(step)
    first.save_checkpoint(str(folder))
    for step in range(half, steps):
        first.train_step(step)
    second = setup_learner(config, stage)
    second.load_checkpoint(str(folder))
    for step in range(half, steps):
        second.train_step(step)
    return first, second
