"""The step loop every driver shares, on a stand-in run (no Ray): checkpoint cadence, failures
that checkpoint between steps (and only then), learner restarts counted and rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayrlhf import checkpoint
from rayrlhf.controller.run_state import RunState, load_run_state, save_run_state
from rayrlhf.controller.step_loop import StepLoop
from rayrlhf.faults import FaultCounts, LearnerLost, RunFailed
from rayrlhf.metrics import RunLogger, read_metrics


class StandIn:
    """A driver whose "learners" hold one number; ``fail[step]`` names what goes wrong there."""

    label = "stand-in "

    def __init__(self, root: Path, fail: dict[int, str]) -> None:
        self.run_dir, self.checkpoints = root, root / "checkpoints"
        self.state, self.faults, self.between_steps = RunState(), FaultCounts(), True
        self.fail, self.weights, self.restarts = fail, 0.0, []

    def train_step(self) -> dict:
        step = self.state.step + 1
        what = self.fail.pop(step, None)
        if what == "lost":
            raise LearnerLost("rank 1 died")
        if what == "before_train":
            raise ValueError("bad reward")  # the learners have not moved: between steps
        self.between_steps = False
        if what == "mid_step":
            raise FloatingPointError("loss is nan")
        self.weights += step
        self.state.step = step
        self.between_steps = True
        if what == "after_train":
            raise RuntimeError("weight sync failed")  # trained, but the row is lost
        return {"weights": self.weights}

    def save_checkpoint(self) -> Path:
        def learners(folder: Path) -> dict:
            (folder / "weights").write_text(repr(self.weights))
            return {}  # nothing hashed by a rank: the driver hashes the file

        fields = {"world_size": 1, "zero_stage": 2, "config": {}}
        return save_run_state(self.checkpoints, self.state, None, learners, fields, keep=5)

    def restart_learners(self, found: checkpoint.Checkpoint | None) -> None:
        self.restarts.append(found.step if found else 0)
        self.state = load_run_state(found.path, None) if found else RunState()
        self.weights = float((found.path / "learner" / "weights").read_text()) if found else 0.0
        self.between_steps = True

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        if self.fail.pop(-self.state.step, None) == "after_step":
            raise OSError("status report failed")  # logged, between steps

    def before_failure_checkpoint(self) -> None:
        pass


def _run(tmp_path: Path, fail: dict[int, str], every: int = 2, target: int = 4) -> StandIn:
    run = StandIn(tmp_path, fail)
    logger = RunLogger(tmp_path, {}, target, progress=False, position=run.state.logs)
    try:
        StepLoop(run, every, max_learner_restarts=1).steps(target, logger)
    finally:
        logger.close()
    return run


def test_checkpoints_follow_the_cadence_and_rows_carry_time_and_faults(tmp_path):
    run = _run(tmp_path, {})
    assert run.weights == 1 + 2 + 3 + 4
    assert checkpoint.latest(run.checkpoints).step == 4
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all("time/step" in r and r["faults/learner_restarts"] == 0 for r in rows)


@pytest.mark.parametrize(
    ("fail", "where", "latest"),
    [
        ("before_train", "checkpoint written after step 2", 2),
        ("after_step", "checkpoint written after step 3", 3),
        ("mid_step", "the last checkpoint stands (the learners stopped mid-step)", 2),
        ("after_train", "the last checkpoint stands (step 3's metrics were not logged)", 2),
    ],
)
def test_a_work_error_checkpoints_only_between_logged_steps(tmp_path, fail, where, latest):
    step = -3 if fail == "after_step" else 3
    with pytest.raises(RunFailed) as err:
        _run(tmp_path, {step: fail}, every=2)
    message = str(err.value)
    assert where in message and "stand-in stopped in step" in message
    assert "error.log" in message and (tmp_path / "error.log").exists()
    assert checkpoint.latest(tmp_path / "checkpoints").step == latest
    # The checkpoint's log position is what was logged: a resume continues row for row.
    assert len(read_metrics(tmp_path)) == latest


def test_a_run_that_trained_no_step_pins_nothing(tmp_path):
    with pytest.raises(RunFailed, match="no checkpoint written \\(no step trained\\)"):
        _run(tmp_path, {1: "before_train"})
    assert checkpoint.latest(tmp_path / "checkpoints") is None


def test_a_lost_learner_restarts_from_the_last_checkpoint_and_is_counted(tmp_path):
    run = _run(tmp_path, {3: "lost"})
    assert run.restarts == [2]
    assert run.weights == 1 + 2 + 3 + 4  # steps 3 and 4 redone once, from step 2's weights
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["faults/learner_restarts"] for r in rows] == [0, 0, 1, 1]


def test_learner_restarts_past_the_limit_stop_the_run(tmp_path):
    with pytest.raises(RunFailed, match="learner group lost 2 times, more than"):
        _run(tmp_path, {1: "lost", 2: "lost"})
