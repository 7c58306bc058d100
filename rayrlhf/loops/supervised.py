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
from rayrlhf.faults import (
    LearnerLost,
    RunFailed,
    RunStopped,
    StopRequest,
    one_line,
    write_error_log,
)
from rayrlhf.loops.run_state import RunState, load_run_state, save_run_state
from rayrlhf.metrics import RunLogger, read_metrics
from rayrlhf.roles.supervised import SupervisedLearner

CONSOLE_KEYS = {
    "sft": ("loss/train", "eval/loss", "eval/perplexity", "lr"),
    "reward_model": ("loss/train", "eval/accuracy", "eval/loss", "eval/rmse", "train/accuracy"),
    "dpo": ("loss/train", "eval/loss", "eval/accuracy", "eval/margin", "train/accuracy"),
    "ilql": ("loss/train", "eval/loss", "eval/q", "eval/v", "eval/awac"),
}


def stage_tree(config: Config, stage: str) -> dict[str, Any]:
    """The part of the config that decides a stage's result (what a resume must match)."""
    tree = to_dict(config)
    part = {stage: tree[stage], "run": tree["run"]}
    if stage in ("sft", "dpo", "ilql"):  # they train model.policy, showing prompts as rollouts do
        part["model"] = tree["model"]
        part["rollout"] = {k: tree["rollout"][k] for k in ("template", "plain_template")}
    return part


class SupervisedStage:
    """One SFT or reward-model stage run: its learner group, logs and checkpoints."""

    def __init__(self, config: Config, stage: str, stage_dir: Path) -> None:
        self.config, self.stage, self.dir = config, stage, stage_dir
        self.section = getattr(config, stage)
        self.root = stage_dir / "checkpoints"
        lc = self.section.learner
        self.tree = stage_tree(config, stage)
        self.data_digests = resume.data_digests(self.tree)  # once: every checkpoint records it
        self.found = resume.find(self.root, config.run.resume)
        if self.found is not None:
            resume.check_compatible(
                self.found,
                self.tree,
                (lc.num_ranks, lc.zero_stage),
                f"{stage}.learner",
                {f"{stage}.max_steps", f"{stage}.eval_every", f"{stage}.epochs"},
                data=self.data_digests,
            )
        cluster.ensure_ray(config)
        self.restarts = 0
        self.group, self.plan = self._start(self.found)

    def _start(self, found: resume.Checkpoint | None) -> tuple[cluster.LearnerGroup, dict]:
        group = cluster.LearnerGroup(
            self.config,
            SupervisedLearner,
            engine=self.section.learner,
            make_args=lambda rank: (self.config, self.stage, rank),
            role=self.stage,
            generation=self.restarts,
        )
        plan = group.wait_ready()[0]
        self.state = RunState()
        if found is not None:
            group.load_checkpoint(str(found.path / "learner"))
            self.state = load_run_state(found.path, None)
        return group, plan

    def run(self) -> dict[str, Any]:
        """Train to the end (from the checkpoint, if any); returns the final metrics."""
        steps = int(self.plan["steps"])
        tree = {self.stage: self.section.model_dump(mode="json")}
        tree["run"] = self.config.run.model_dump(mode="json")
        logger = RunLogger(
            self.dir,
            tree,
            steps,
            self.config.run.progress_bar,
            CONSOLE_KEYS[self.stage],
            desc=self.stage,
            position=self.state.logs,
        )
        try:
            with StopRequest() as stop:
                if self.state.step == 0:
                    before = self.group.call_agreed("evaluate")
                    logger.log(0, {**self.plan, **before}, advance=False)
                while self.state.step < steps:
                    try:
                        self._step(logger, steps, stop)
                    except LearnerLost as err:
                        self._restart(err, logger)
        except (RunStopped, KeyboardInterrupt, RunFailed):
            raise
        except Exception as err:
            log = write_error_log(self.dir, err)
            raise RunFailed(
                f"{one_line(err)} — {self.stage} stopped in step {self.state.step + 1}; the last "
                f"checkpoint stands; traceback in {log}. Fix the cause and run the same "
                "command again to resume"
            ) from err
        finally:
            logger.close()
        self.group.call("save", str(self.dir / "model"))
        return self._final()

    def _step(self, logger: RunLogger, steps: int, stop: StopRequest) -> None:
        step = self.state.step
        metrics = self.group.call_agreed("train_step", step)
        if (step + 1) % self.section.eval_every == 0 or step + 1 == steps:
            metrics.update(self.group.call_agreed("evaluate"))
        logger.log(step + 1, metrics)
        self.state.step = step + 1
        every = self.config.run.checkpoint_every
        if stop.requested or (every and (self.state.step % every == 0 or self.state.step == steps)):
            self.state.logs = logger.position()
            self._save()
        if stop.requested:
            raise RunStopped(
                f"{self.stage} stopped by {stop.signal_name} after step {self.state.step}; "
                f"checkpoint in {self.root}. Run the same command again to resume",
                str(stop.signal_name),
            )

    def _save(self) -> None:
        lc = self.section.learner
        save_run_state(
            self.root,
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

    def _restart(self, err: LearnerLost, logger: RunLogger) -> None:
        """Stop the group, start it again from the last checkpoint (or the start)."""
        self.restarts += 1
        if self.restarts > self.config.run.max_learner_restarts:
            raise RunFailed(
                f"{self.stage} learners lost {self.restarts} times, more than "
                f"run.max_learner_restarts={self.config.run.max_learner_restarts}; last: "
                f"{one_line(err)}"
            ) from err
        print(f"[rayrlhf] {self.stage} learner lost ({one_line(err)}); restarting the group")
        self.group.shutdown()
        self.group, _ = self._start(resume.find(self.root, "auto"))
        logger.rewind(self.state.logs)

    def _final(self) -> dict[str, Any]:
        """Plan, metrics before training and the last value of every metric (all steps)."""
        rows = read_metrics(self.dir)
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
