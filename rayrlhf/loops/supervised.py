"""The driver of an SFT or reward-model stage: step the learner ranks, evaluate, save.

The driver sends step numbers and receives metrics; the ranks read and encode the data
themselves (see :mod:`rayrlhf.roles.supervised`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayrlhf import cluster
from rayrlhf.config import Config
from rayrlhf.metrics import RunLogger
from rayrlhf.roles.supervised import SupervisedLearner

CONSOLE_KEYS = {
    "sft": ("loss/train", "eval/loss", "eval/perplexity", "lr"),
    "reward_model": ("loss/train", "eval/accuracy", "eval/loss", "eval/rmse", "train/accuracy"),
}


def run_supervised_stage(config: Config, stage: str, stage_dir: Path) -> dict[str, Any]:
    """Train the ``stage`` section's model on its learner ranks; save it to ``stage_dir/model``.

    Evaluates on the held-out rows before the first step, every ``eval_every`` steps and after
    the last; returns the final metrics (data counts, last train and eval metrics).
    """
    section = getattr(config, stage)
    cluster.ensure_ray(config)
    group = cluster.LearnerGroup(
        config,
        SupervisedLearner,
        engine=section.learner,
        make_args=lambda rank: (config, stage, rank),
        role=stage,
    )
    try:
        plan = group.wait_ready()[0]
        steps = int(plan["steps"])
        logger = RunLogger(
            stage_dir,
            {stage: section.model_dump(mode="json"), "run": config.run.model_dump(mode="json")},
            steps,
            config.run.progress_bar,
            CONSOLE_KEYS[stage],
            desc=stage,
        )
        final: dict[str, Any] = dict(plan)
        try:
            before = group.call_agreed("evaluate")
            logger.log(0, {**plan, **before}, advance=False)
            final.update({f"{k}_before": v for k, v in before.items()})
            for step in range(steps):
                metrics = group.call_agreed("train_step", step)
                last = step + 1 == steps
                if (step + 1) % section.eval_every == 0 or last:
                    metrics.update(group.call_agreed("evaluate"))
                logger.log(step + 1, metrics)
                final.update(metrics)
        finally:
            logger.close()
        group.call("save", str(stage_dir / "model"))
    finally:
        group.shutdown()
    return final
