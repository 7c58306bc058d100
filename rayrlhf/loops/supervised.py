"""The driver of an SFT, reward-model, DPO or ILQL stage: step the learner ranks, evaluate, save.

The driver sends step numbers and receives metrics; the ranks read and encode the data
themselves (see :mod:`rayrlhf.roles.supervised`). The stage checkpoints every
``run.checkpoint_every`` steps (and on SIGINT/SIGTERM) under ``STAGE_DIR/checkpoints`` and a
rerun resumes mid-stage; a dead learner rank restarts the group from the last checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayrlhf import cluster, resume
from rayrlhf.config import Config, to_dict
from rayrlhf.config.results import stage_length_fields, stage_tree
from rayrlhf.controller.run_state import (
    RunState,
    learner_entries,
    load_run_state,
    save_run_state,
)
from rayrlhf.controller.step_loop import StepLoop
from rayrlhf.faults import FaultCounts
from rayrlhf.metrics import RunLogger, read_metrics
from rayrlhf.roles.supervised import SupervisedLearner

CONSOLE_KEYS = {
    "sft": ("loss/train", "eval/loss", "eval/perplexity", "lr"),
    "reward_model": ("loss/train", "eval/accuracy", "eval/loss", "eval/rmse", "train/accuracy"),
    "dpo": ("loss/train", "eval/loss", "eval/accuracy", "eval/margin", "train/accuracy"),
    "ilql": ("loss/train", "eval/loss", "eval/q", "eval/v", "eval/awac"),
}


class SupervisedStage:
    """One SFT, reward-model, DPO or ILQL stage run: its learner group, logs and checkpoints.

    Its step is one optimizer step of the ranks (and a held-out evaluation every
    ``eval_every``); the run around it is the step loop's, as for the online trainer.
    """

    def __init__(self, config: Config, stage: str, stage_dir: Path) -> None:
        self.config, self.stage, self.run_dir = config, stage, stage_dir
        self.label = f"{stage} "
        self.section = getattr(config, stage)
        self.checkpoints = stage_dir / "checkpoints"
        lc = self.section.learner
        self.tree = stage_tree(to_dict(config), stage)
        self.data_digests = resume.data_digests(self.tree)  # once: every checkpoint records it
        found = resume.starting_checkpoint(
            self.checkpoints,
            config.run.resume,
            self.tree,
            (lc.num_ranks, lc.zero_stage),
            f"{stage}.learner",
            stage_length_fields(stage),
            data=self.data_digests,
        )
        cluster.ensure_ray(config)
        self.faults = FaultCounts()
        self.between_steps = True
        self.group: cluster.LearnerGroup | None = None
        self.restart_learners(found)
        vars(self.faults).update(self.state.faults)  # what the stage survived so far
        self.loop = StepLoop(self, config.run.checkpoint_every, config.run.max_learner_restarts)

    def restart_learners(self, found: resume.Checkpoint | None) -> None:
        """A (new) learner group, restored to ``found`` (None: the start)."""
        if self.group is not None:
            self.group.shutdown()
        self.group = cluster.LearnerGroup(
            self.config,
            SupervisedLearner,
            engine=self.section.learner,
            make_args=lambda rank: (self.config, self.stage, rank),
            role=self.stage,
            generation=self.faults.learner_restarts,
        )
        self.plan = self.group.wait_ready()[0]
        self.state = RunState()
        if found is not None:
            self.group.load_checkpoint(str(found.path / "learner"), learner_entries(found))
            self.state = load_run_state(found.path, None)
        self.between_steps = True

    def run(self) -> dict[str, Any]:
        """Train to the end (from the checkpoint, if any); returns the final metrics."""
        steps = int(self.plan["steps"])
        tree = {self.stage: self.section.model_dump(mode="json")}
        tree["run"] = self.config.run.model_dump(mode="json")
        logger = RunLogger(
            self.run_dir,
            tree,
            steps,
            self.config.run.progress_bar,
            CONSOLE_KEYS[self.stage],
            desc=self.stage,
            position=self.state.logs,
        )

        def evaluate_first() -> None:
            if self.state.step == 0:
                before = self.group.call_agreed("evaluate")
                logger.log(0, {**self.plan, **before}, advance=False)

        ok = False
        try:
            self.loop.steps(steps, logger, evaluate_first)
            ok = True
        finally:
            logger.close(ok)
        self.group.call("save", str(self.run_dir / "model"))
        return self._final()

    def train_step(self) -> dict[str, Any]:
        """One optimizer step of every rank, then (every ``eval_every``) held-out metrics."""
        step, steps = self.state.step, int(self.plan["steps"])
        self.between_steps = False
        metrics = self.group.call_agreed("train_step", step)
        self.state.step = step + 1
        self.between_steps = True
        if (step + 1) % self.section.eval_every == 0 or step + 1 == steps:
            metrics.update(self.group.call_agreed("evaluate"))
        return metrics

    def save_checkpoint(self) -> Path:
        """Commit a checkpoint of the state after the current step; returns its folder."""
        lc = self.section.learner
        return save_run_state(
            self.checkpoints,
            self.state,
            None,
            lambda path: self.group.save_checkpoint(str(path)),
            {
                "kind": self.stage,
                "world_size": lc.num_ranks,
                "zero_stage": lc.zero_stage,
                "config": self.tree,
                "data": self.data_digests,
            },
            self.config.run.keep_checkpoints,
        )

    def before_step(self) -> None:
        """Nothing to do between a stage's steps."""

    def after_step(self) -> None:
        """Nothing to report after a stage's step."""

    def before_failure_checkpoint(self) -> None:
        """A stage keeps nothing in flight between steps."""

    def _final(self) -> dict[str, Any]:
        """Plan, metrics before training and the last value of every metric (all steps)."""
        rows = read_metrics(self.run_dir)
        final: dict[str, Any] = dict(self.plan)
        final.update({f"{k}_before": v for k, v in rows[0].items() if k.startswith("eval/")})
        for row in rows[1:]:
            final.update({k: v for k, v in row.items() if k not in ("step", "time")})
        return final

    def shutdown(self) -> None:
        """Stop the learner group."""
        self.group.shutdown()


def run_supervised_stage(config: Config, stage: str, stage_dir: Path) -> dict[str, Any]:
    """Train the ``stage`` section's model on its learner ranks; save it to ``stage_dir/model``.

    Evaluates on the held-out rows before the first step, every ``eval_every`` steps and after
    the last; returns the final metrics (data counts, last train and eval metrics).
    """
    runner = SupervisedStage(config, stage, stage_dir)
    try:
        return runner.run()
    finally:
        runner.shutdown()
