"""Runs that survive: exact resume, dead and hung workers, a dead learner rank, a killed driver.

Every survivor is compared with a run of the same config that nothing happened to: parameters
and optimizer state by sha256 of their bytes (equal digests ⇔ ``torch.equal``), metrics row for
row (wall-clock times and fault counters aside).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from tracked import assert_each_step_once, tracked
from trained import on_dispatch, pid_of, train

from rayrlhf import checkpoint
from rayrlhf.buffer import SampleState
from rayrlhf.config import load
from rayrlhf.faults import RunFailed
from rayrlhf.metrics import comparable, read_metrics
from rayrlhf.trackers import load_state

pytestmark = pytest.mark.integration

STEPS = 4
# Multi-turn episodes: a turn ending in "good" or "film" is a tool call, answered by an
# observation and another turn (rayrlhf.envs.words). The one-rank runs are all multi-turn, so
# every fault below strikes episodes in flight; the two-rank runs stay single-turn.
EPISODES = ("rollout.environment=rayrlhf.envs.words:WordToolEnv", "rollout.max_turns=3")
ONE_RANK = ("learner.num_ranks=1", "learner.zero_stage=2", "learner.micro_batch_size=4", *EPISODES)
TWO_RANKS = ("learner.num_ranks=2", "learner.zero_stage=3", "learner.micro_batch_size=2")


@pytest.fixture(scope="module")
def survival(tiny_model, tmp_path_factory):
    """Config factory over a prompts file with one malformed row (skipped and counted)."""
    root = tmp_path_factory.mktemp("survival")
    prompts = root / "prompts.jsonl"
    rows = [{"prompt": p} for p in ("the movie was very", "a film is", "the plot", "this story")]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {"text": "no prompt"}]))

    def overrides(name: str, *extra: str) -> list[str]:
        return [
            f"model.policy={tiny_model}",
            f"data.prompts={prompts}",
            "data.max_bad_fraction=0.5",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
            f"run.output_dir={root}",
            f"run.name={name}",
            "run.progress_bar=false",
            f"run.num_steps={STEPS}",
            "run.checkpoint_every=2",
            "rollout.num_workers=2",
            "rollout.prompts_per_step=8",
            "rollout.chunk_size=2",
            "rollout.max_new_tokens=8",
            "learner.minibatch_size=8",
            "learner.policy_lr=1e-3",
            "learner.value_lr=1e-3",
            *extra,
        ]

    return root, overrides


def _train(overrides: list[str], steps: int | None = None, patch=None) -> dict:
    return train(load(None, overrides), steps, patch)


@pytest.fixture(scope="module")
def clean_one(ray_local, survival):
    return _train(survival[1]("clean1", *ONE_RANK))


@pytest.fixture(scope="module")
def clean_two(ray_local, survival):
    return _train(survival[1]("clean2", *TWO_RANKS))


def _assert_same_run(run: dict, clean: dict) -> None:
    assert run["digests"] == clean["digests"]  # parameters and optimizer state, every rank
    assert [r["step"] for r in run["rows"]] == list(range(1, STEPS + 1))  # one row per step
    assert comparable(run["rows"]) == comparable(clean["rows"])
    ids = sorted(f"{s}-{i}" for s in range(STEPS) for i in range(8))
    assert sorted(run["ledger"]) == ids  # every sample trained exactly once
    assert set(run["ledger"].values()) == {SampleState.TRAINED}


def test_n_steps_stop_resume_n_steps_equals_2n(survival, clean_two, mlflow_server):
    """Two ZeRO-3 ranks stopped after N steps and resumed by a new driver on fewer rollout
    workers. (One rank resumes in the CLI test below and in the async test.) Logged to a real
    MLflow server and W&B's offline files: the resumed run continues the same tracker runs."""
    overrides = survival[1]("resume", *TWO_RANKS, *tracked(mlflow_server))
    first = _train(overrides, steps=STEPS // 2)
    assert len(first["rows"]) == STEPS // 2
    run_dir = survival[0] / "resume"
    ids = load_state(run_dir)
    second = _train([*overrides, "rollout.num_workers=1"])  # worker counts may change
    _assert_same_run(second, clean_two)
    assert clean_two["rows"][0]["data/prompts_skipped"] == 1  # the malformed prompt row
    assert load_state(run_dir) == {k: {**v, "logged": STEPS} for k, v in ids.items()}
    assert_each_step_once(mlflow_server, run_dir, second["rows"])


def test_dead_and_hung_workers_cost_nothing(survival, clean_one):
    """Multi-turn episodes on two rollout workers, their environments on an environment worker:
    one rollout worker hung (SIGSTOP) in step 1, a rollout worker (while it runs its episodes),
    a reward and a reference worker killed (SIGKILL of their processes) mid-step in steps 2-4,
    and the environment worker killed with episodes in flight: same run as the clean one, whose
    rollout workers run the environments themselves."""

    def kill(role_index: int, sig: int = signal.SIGKILL):
        return lambda flight: os.kill(pid_of(flight.actors[role_index]), sig)

    def kill_env_soon(flight):  # once the step's chunks are into their episodes
        threading.Timer(0.3, os.kill, (pid_of(flight.env), signal.SIGKILL)).start()

    groups = []
    actions = {1: kill(0, signal.SIGSTOP), 5: kill(0), 10: kill(1), 12: kill_env_soon, 15: kill(2)}

    def patch(trainer):
        groups.append(trainer.groups["environment"])
        on_dispatch(trainer, actions)

    env_worker = ("env_workers.num_workers=1", "env_workers.call_timeout_s=8")
    overrides = survival[1]("kills", *ONE_RANK, *env_worker, "timeouts.rollout_s=10")
    run = _train(overrides, patch=patch)
    _assert_same_run(run, clean_one)
    last = run["rows"][-1]
    assert last["faults/worker_restarts"] == 5
    assert last["faults/redispatched_chunks"] >= 4
    assert groups[0]._next_index == 2  # environment-0 replaced by environment-1
    assert sum(r["episode/tool_calls"] for r in run["rows"]) > 0  # episodes of several turns


def test_a_dead_learner_rank_restarts_the_group_from_the_checkpoint(
    survival, clean_two, mlflow_server
):
    """Rolled back to the step-2 checkpoint with step 3 logged: steps 3 and 4 train again, and
    MLflow and W&B still hold each step once."""
    trainers = []

    def kill_rank_1(flight):  # mid-step 4, after the step-2 checkpoint and step 3's log line
        os.kill(pid_of(trainers[0].learners.actors[1]), signal.SIGKILL)

    def patch(trainer):
        trainers.append(trainer)
        on_dispatch(trainer, {13: kill_rank_1})

    overrides = survival[1]("learner-kill", *TWO_RANKS, *tracked(mlflow_server))
    run = _train(overrides, patch=patch)
    _assert_same_run(run, clean_two)
    assert run["rows"][-1]["faults/learner_restarts"] == 1
    assert_each_step_once(mlflow_server, survival[0] / "learner-kill", run["rows"])


def test_restarts_used_up_stop_the_run_with_a_checkpoint_and_the_cause(survival):
    overrides = survival[1]("used-up", *ONE_RANK, "run.max_worker_restarts=0")

    def kill(flight):
        os.kill(pid_of(flight.actors[0]), signal.SIGKILL)

    with pytest.raises(RunFailed) as err:
        _train(overrides, patch=lambda t: on_dispatch(t, {5: kill}))
    message = str(err.value)
    assert "run.max_worker_restarts=0" in message and "rollout rollout-" in message
    assert "ActorDiedError" in message and "checkpoint written after step 1" in message
    assert checkpoint.latest(survival[0] / "used-up" / "checkpoints").step == 1


# ---- the driver killed, stopped, crashing mid-checkpoint: the CLI, as a user runs it ----------


def _cli(overrides: list[str], env: dict | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "rayrlhf.cli", "train", "/dev/null"]
    for item in overrides:
        args += ["--set", item]
    return subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_crash_mid_checkpoint_then_ctrl_c_continue_the_same_run(survival, clean_one):
    """The driver SIGKILLed in the middle of writing its step-4 checkpoint (after the step-2
    one); the rerun resumes from step 2 and is stopped by Ctrl-C after its last step, which it
    checkpoints. One run, as if nothing had happened. (The faults are injected at exact points:
    a tiny run's steps take a fraction of a second, so a signal timed from outside would race
    them.)"""
    root, overrides = survival
    args = overrides("cli", *ONE_RANK)
    run_dir, ckpts = root / "cli", root / "cli" / "checkpoints"
    code, _, _ = _finish(_cli(args, {"RAYRLHF_FAULT": f"checkpoint_before_manifest:{STEPS}"}))
    assert code == -signal.SIGKILL
    assert (ckpts / f"tmp-step-{STEPS:08d}").is_dir()  # parts written, no manifest, no rename
    assert checkpoint.latest(ckpts).step == 2 and len(read_metrics(run_dir)) == STEPS

    # Ctrl-C: SIGINT to the whole foreground process group, Ray's processes included.
    code, out, err = _finish(_cli(args, {"RAYRLHF_FAULT": f"ctrl_c_after_step:{STEPS}"}))
    assert code == 128 + signal.SIGINT, err
    assert "resumed from" in out and "step-00000002" in out  # not the torn folder
    assert f"stopped by SIGINT after step {STEPS}" in err
    assert "run the same command again" in err.lower()
    assert checkpoint.latest(ckpts).step == STEPS
    assert comparable(read_metrics(run_dir)) == comparable(clean_one["rows"])


def test_a_bad_reward_function_stops_with_one_line_and_a_checkpoint(survival, tmp_path):
    root, overrides = survival
    (tmp_path / "badreward.py").write_text(
        "calls = 0\n"
        "def nan_later(prompts, responses):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    return [float('nan') if calls > 4 else 0.0 for _ in responses]\n"
    )
    args = overrides("bad-reward", *ONE_RANK, "reward.function=badreward:nan_later")
    code, _, err = _finish(_cli(args, {"PYTHONPATH": str(tmp_path)}))
    assert code == 1, err
    assert "Traceback" not in err  # no wall of traceback: it is in error.log
    last = err.strip().splitlines()[-1]
    assert last.startswith("rayrlhf: RewardError: reward function badreward:nan_later gave ")
    assert "non-finite score nan for sample '1-0'" in last  # the fifth chunk: step 2's first
    assert "checkpoint written after step 1" in last and "error.log" in last
    log = (root / "bad-reward" / "error.log").read_text()
    assert "Traceback" in log and "RewardError" in log
    assert checkpoint.latest(root / "bad-reward" / "checkpoints").step == 1
