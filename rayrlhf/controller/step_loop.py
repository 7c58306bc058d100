"""The one step loop of every driver: the online trainer and the SFT, reward-model, DPO and ILQL
stages plug their step into it, and so behave the same on every fault.

It owns what a run does around its steps:

- **stop signals**: SIGINT/SIGTERM stop the run at the next step boundary, with a checkpoint;
- **checkpoint cadence**: every ``run.checkpoint_every`` steps and after the last;
- **learner restarts**: a lost rank restarts the whole learner group from the last checkpoint
  (or the start), up to ``run.max_learner_restarts`` times, counted in ``faults/*``;
- **failures**: an error of the work writes a checkpoint whenever the learners are between
  steps and every step they took is logged (so a resume continues the logs row for row; a run
  that trained no step pins nothing), the traceback goes to ``RUN_DIR/error.log`` and the run
  stops with one line;
- **step timing** (``time/step``) and the fault counters of every metrics row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rayrlhf import resume
from rayrlhf.checkpoint import Checkpoint, inject_fault
from rayrlhf.controller.run_state import RunState
from rayrlhf.faults import (
    FaultCounts,
    LearnerLost,
    RunFailed,
    RunStopped,
    StopRequest,
    one_line,
    write_error_log,
)
from rayrlhf.metrics import RunLogger


class SteppedRun(Protocol):
    """What a driver gives the step loop."""

    label: str  # prefix of its messages: "" for the online trainer, "sft " for a stage
    run_dir: Path
    checkpoints: Path
    state: RunState
    faults: FaultCounts
    between_steps: bool  # the learners hold the state after ``state.step``: checkpointable

    def train_step(self) -> dict[str, Any]:
        """One step; advances ``state.step`` and returns the step's metrics."""

    def save_checkpoint(self) -> Path:
        """Commit a checkpoint of the state after ``state.step``."""

    def restart_learners(self, found: Checkpoint | None) -> None:
        """A new learner group, restored to ``found`` (None: the start)."""

    def before_step(self) -> None:
        """Between steps, before the next one (resize requests)."""

    def after_step(self) -> None:
        """After a step is logged (status reports)."""

    def before_failure_checkpoint(self) -> None:
        """Make the state checkpointable after an error between steps."""


class StepLoop:
    """Runs a driver's steps to a target, with the behaviour of the module docstring."""

    def __init__(self, run: SteppedRun, checkpoint_every: int, max_learner_restarts: int) -> None:
        self.run = run
        self.every, self.max_restarts = checkpoint_every, max_learner_restarts

    def steps(
        self, target: int, logger: RunLogger, begin: Callable[[], None] | None = None
    ) -> list[dict[str, Any]]:
        """Steps until ``state.step`` reaches ``target``, after ``begin()`` (a stage's first
        evaluation); their metrics (those undone by a learner restart dropped). Raises
        :class:`RunStopped` after a stop signal (with a checkpoint) and :class:`RunFailed` on an
        error it cannot get past."""
        run = self.run
        history: list[tuple[int, dict[str, Any]]] = []
        self.logged = run.state.step  # the last step whose metrics row is written
        try:
            with StopRequest() as stop:
                if begin is not None:
                    begin()
                while run.state.step < target:
                    run.before_step()
                    start = time.perf_counter()
                    try:
                        metrics = run.train_step()
                    except LearnerLost as err:
                        self._restart(err, logger)
                        self.logged = run.state.step
                        history = [(s, m) for s, m in history if s <= run.state.step]
                        continue
                    step = run.state.step
                    metrics["time/step"] = time.perf_counter() - start
                    metrics.update(run.faults.metrics())
                    logger.log(step, metrics, metrics.pop("samples_text", []))
                    self.logged = step
                    inject_fault(f"after_step:{step}")
                    history.append((step, metrics))
                    run.after_step()
                    due = self.every and (step % self.every == 0 or step == target)
                    if due or stop.requested:
                        self.checkpoint(logger)
                    if stop.requested:
                        raise RunStopped(
                            f"{run.label}stopped by {stop.signal_name} after step {step}; "
                            f"checkpoint in {run.checkpoints}. Run the same command again to "
                            "resume",
                            str(stop.signal_name),
                        )
        except (RunStopped, KeyboardInterrupt):
            raise
        except Exception as err:
            raise self._failure(err, logger) from err
        finally:
            run.state.logs = logger.position()  # a later call continues from here
        return [metrics for _, metrics in history]

    def checkpoint(self, logger: RunLogger) -> Path:
        """Commit a checkpoint with the logs' position and the fault counters."""
        self.run.state.logs = logger.position()
        self.run.state.faults = vars(self.run.faults).copy()
        return self.run.save_checkpoint()

    def _restart(self, err: LearnerLost, logger: RunLogger) -> None:
        """Stop the whole learner group, start it again and roll back to the last checkpoint."""
        run, faults = self.run, self.run.faults
        faults.learner_restarts += 1
        faults.last_cause = f"learner: {one_line(err)}"
        if faults.learner_restarts > self.max_restarts:
            raise RunFailed(
                f"{run.label}learner group lost {faults.learner_restarts} times, more than "
                f"run.max_learner_restarts={self.max_restarts}; last: {faults.last_cause}"
            ) from err
        found = resume.find(run.checkpoints, "auto")
        where = f"checkpoint {found.path.name}" if found else "the start (no checkpoint yet)"
        print(f"[rayrlhf] {run.label}{faults.last_cause}; restarting the learners from {where}")
        run.restart_learners(found)
        logger.rewind(run.state.logs)

    def _failure(self, err: BaseException, logger: RunLogger) -> RunFailed:
        """Checkpoint if the learners are between steps with every step logged, log the
        traceback, name the cause."""
        run = self.run
        where = "the last checkpoint stands (the learners stopped mid-step)"
        if run.between_steps and run.state.step != self.logged:
            where = f"the last checkpoint stands (step {run.state.step}'s metrics were not logged)"
        elif run.between_steps and run.state.step == 0:
            where = "no checkpoint written (no step trained)"
        elif run.between_steps:
            try:
                run.before_failure_checkpoint()
                where = f"checkpoint written after step {run.state.step}"
                self.checkpoint(logger)
            except Exception as ckpt_err:  # the cause may have taken the learners with it
                where = f"no checkpoint written ({one_line(ckpt_err)})"
        log = write_error_log(run.run_dir, err)
        cause = str(err) if isinstance(err, RunFailed) else one_line(err)
        return RunFailed(
            f"{cause} — {run.label}stopped in step {run.state.step + 1}; {where}; traceback in "
            f"{log}. Fix the cause and run the same command again to resume"
        )
