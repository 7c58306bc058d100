"""What the survival tests compare between runs: a run's digests, metrics rows and ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rayrlhf.config import Config
from rayrlhf.loops.ppo import PPOTrainer
from rayrlhf.metrics import read_metrics


def train(
    config: Config, steps: int | None = None, patch: Callable[[PPOTrainer], Any] | None = None
) -> dict:
    """Run ``steps`` more steps (default: to ``run.num_steps``) of a trainer for ``config``,
    after ``patch(trainer)``; its learners' state digests, metrics rows and sample ledger."""
    trainer = PPOTrainer(config)
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
