"""What the survival tests compare between runs: a run's digests, metrics rows and ledger."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import ray

from rayrlhf.config import Config
from rayrlhf.faults import on_dispatch
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.metrics import read_metrics

# PPO's learning setup (reward = frequency of "good"): the margins of the learning tests hold at it.
LEARNING = (
    "run.num_steps=16",
    "rollout.prompts_per_step=32",
    "rollout.chunk_size=8",
    "learner.minibatch_size=16",
    "learner.micro_batch_size=16",
    "learner.ppo_epochs=2",
    "ppo.kl_coef=0.01",
)


def assert_learns(history: list[dict[str, Any]]) -> None:
    """The tiny policy learned the rule reward: from under 0.1 to over 0.5 (by 0.4 at least),
    comparing the means of the first and last three steps."""
    rewards = [m["reward/mean"] for m in history]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert first < 0.1, rewards
    assert last > 0.5 and last > first + 0.4, rewards


def train(
    config: Config, steps: int | None = None, patch: Callable[[OnlineTrainer], Any] | None = None
) -> dict:
    """Run ``steps`` more steps (default: to ``run.num_steps``) of a trainer for ``config``,
    after ``patch(trainer)``; its learners' state digests, metrics rows and sample ledger."""
    trainer = OnlineTrainer(config)
    try:
        if patch is not None:
            patch(trainer)
        trainer.run(steps)
        return {
            "digests": trainer.learners.state_digests(),
            "rows": read_metrics(trainer.run_dir),
            "ledger": dict(trainer.buffer.ledger),
        }
    finally:
        trainer.shutdown()


def pid_of(actor: Any) -> int:
    """The process id of a Ray actor."""
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def kill_rollout_at_dispatch(n: int) -> Callable[[OnlineTrainer], None]:
    """A ``patch`` for :func:`train`: SIGKILL the rollout worker of the ``n``-th chunk dispatched,
    right after its calls are submitted, so it dies while it generates."""
    kill = {n: lambda flight: os.kill(pid_of(flight.actors[0]), signal.SIGKILL)}
    return lambda trainer: on_dispatch(trainer, kill)
