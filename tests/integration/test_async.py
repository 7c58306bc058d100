"""Asynchronous training (``rollout.max_staleness``) on a local Ray, with multi-turn episodes:
every sample trained once, the staleness histogram, a resize with steps in flight, and an exact
resume of a run stopped with a step in flight, during which a rollout worker dies while it
generates a step ahead (its episodes in flight)."""

from __future__ import annotations

import shutil

import pytest
from trained import kill_rollout_at_dispatch, train

from rayrlhf.buffer import SampleState
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.metrics import comparable

pytestmark = pytest.mark.integration


def _async(make_config, name: str, staleness: int = 1):
    return make_config(
        f"run.name={name}",
        f"rollout.max_staleness={staleness}",
        "run.num_steps=5",
        "run.checkpoint_every=2",
        "rollout.prompts_per_step=8",
        "rollout.chunk_size=4",
        "learner.minibatch_size=8",
        "learner.micro_batch_size=8",
        "learner.ppo_epochs=2",
        "ppo.kl_coef=0.01",
        # Episodes of tool calls ("good"/"film" end a turn, an observation follows).
        "rollout.environment=rayrlhf.envs.words:WordToolEnv",
        "rollout.max_turns=3",
    )


def test_async_trains_each_sample_once_and_resumes_exactly_past_a_dead_worker(
    ray_local, make_config
):
    """5 steps at staleness 1, resized to 2 rollout workers after step 2 and back to 1 after
    step 3 (the removed worker's step ahead finishes first), against a copy of that run's folder
    at its step-2 checkpoint (step 2 then generating ahead, with version 1) resumed for 3 more
    steps on one worker, which is killed while it generates step 3 ahead of training: equal
    parameters, optimizer state, metrics and ledger (samples depend on ids, not workers)."""
    copied: list = []

    def stop_copy_and_resize(trainer: OnlineTrainer) -> None:
        trainer.run(2)
        copied.append(shutil.copytree(trainer.run_dir, trainer.run_dir.parent / "async-resume"))
        trainer.set_rollout_workers(2)
        trainer.run(1)
        trainer.set_rollout_workers(1)

    clean = train(_async(make_config, "async-clean"), patch=stop_copy_and_resize)
    rows = clean["rows"]
    assert list(clean["ledger"].values()) == [SampleState.TRAINED] * 5 * 8  # nothing left over
    assert [r["staleness/0"] for r in rows] == [8, 0, 0, 0, 0]  # step 0 is fresh, then 1 behind
    assert [r["staleness/1"] for r in rows] == [0, 8, 8, 8, 8]
    assert all(r["samples"] == 8 for r in rows)
    assert sum(r["episode/tool_calls"] for r in rows) > 0  # episodes of several turns
    assert [r["rollout/workers"] for r in rows] == [1, 1, 2, 1, 1]
    assert rows[0]["rollout/logprob_mismatch"] < 1e-4  # fresh samples: the same weights
    assert all(0 < r["off_policy/logprob_gap"] for r in rows[1:])  # stale ones: the policy moved
    assert all(abs(r["off_policy/weight_mean"] - 1) < 0.2 for r in rows)
    checkpoint = copied[0] / "checkpoints/step-00000002"
    assert (checkpoint / "rollout_weights/v1.pt").exists()  # step 2's generating version

    # The resumed step 2's chunks are dispatches 1-2; the third is step 3's, generating ahead.
    second = train(_async(make_config, "async-resume"), patch=kill_rollout_at_dispatch(3))
    assert second["digests"] == clean["digests"]
    assert comparable(second["rows"]) == comparable(clean["rows"])
    assert second["ledger"] == clean["ledger"]
    assert second["rows"][-1]["faults/worker_restarts"] == 1
    assert clean["rows"][-1]["faults/worker_restarts"] == 0  # the removal killed no chunk
