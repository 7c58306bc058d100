"""GRPO, RLOO and the rest on a local Ray: they learn, hold no critic, survive and resume exactly.

The same rollout, reward and reference workers and the same learner class as PPO; only the
``algorithm`` section differs.
"""

from __future__ import annotations

import os
import signal

import pytest
import ray

from rayrlhf.buffer import SampleState
from rayrlhf.loops.ppo import PPOTrainer
from rayrlhf.metrics import comparable, read_metrics

pytestmark = pytest.mark.integration

GROUPS = ("rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.chunk_size=2")


def _names(trainer: PPOTrainer, role: str) -> list[str]:
    prefix = f"{trainer.config.run.name}-"
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix) and f"/{role}-" in a["name"]
    ]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_critic_free_policy_learns_with_no_value_model(ray_local, make_config, tmp_path, algorithm):
    """Reward = frequency of "good" (about 3% for the random policy), as in PPO's test: a
    flipped advantage sign drives it to 0, a missing weight sync is refused by the learner."""
    cfg = make_config(
        f"algorithm.name={algorithm}",
        f"run.name={algorithm}",
        *GROUPS,
        "run.num_steps=16",
        "run.checkpoint_every=16",
        "learner.minibatch_size=16",
        "learner.micro_batch_size=16",
        "learner.ppo_epochs=2",
        "ppo.kl_coef=0.01",
    )
    trainer = PPOTrainer(cfg, tmp_path / "run")
    try:
        assert all(
            ray.get(
                [a.__ray_call__.remote(lambda s: s.value is None) for a in trainer.learners.actors]
            )
        )
        assert len(_names(trainer, "reference")) == 1  # KL coefficient 0.01: a reference runs
        history = trainer.run()
    finally:
        trainer.shutdown()
    rewards = [m["reward/mean"] for m in history]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert first < 0.1, rewards
    assert last > 0.5 and last > first + 0.4, rewards
    assert all(m["samples"] == 32 and "loss/value" not in m for m in history)
    assert "value/grad_norm" not in history[-1] and history[-1]["group/reward_std"] > 0
    assert history[-1]["kl/mean"] > 0 and (algorithm != "grpo" or history[-1]["loss/kl"] > 0)
    parts = {p.name for p in (tmp_path / "run/checkpoints/step-00000016/learner").iterdir()}
    assert "policy" in parts and "value" not in parts


def _dynamic(make_config, name: str, *extra: str):
    return make_config(
        "algorithm.name=grpo",
        "algorithm.dynamic_sampling=true",
        "ppo.kl_coef=0",
        "reward.function=rayrlhf.rewards.rules:contains_target_word",
        f"run.name={name}",
        "run.num_steps=4",
        "run.checkpoint_every=2",
        "rollout.num_workers=2",
        "rollout.prompts_per_step=4",
        "rollout.group_size=4",
        "rollout.chunk_size=1",
        "learner.minibatch_size=16",
        "learner.micro_batch_size=4",
        *extra,
    )


def _run(cfg, steps: int | None = None, patch=None) -> dict:
    trainer = PPOTrainer(cfg)
    try:
        refs = _names(trainer, "reference")
        if patch is not None:
            patch(trainer)
        trainer.run(steps)
        return {
            "digests": trainer.learners.state_digests(),
            "rows": read_metrics(trainer.run_dir),
            "ledger": dict(trainer.buffer.ledger),
            "references": refs,
        }
    finally:
        trainer.shutdown()


def test_grpo_dynamic_sampling_resumes_exactly_with_a_worker_killed_mid_group(
    ray_local, make_config
):
    """4 steps straight, against 2 steps, a stop, and 2 more steps during which a rollout
    worker is killed while it generates a group: equal parameters, optimizer state, metrics
    and ledger. Pass/fail rewards make many groups all-equal, so the steps draw extra prompts:
    the resumed run must continue from the same prompt position."""
    clean = _run(_dynamic(make_config, "dyn-clean"))
    assert clean["references"] == []  # KL coefficient 0: no reference worker started
    dropped = sum(r["group/dropped"] for r in clean["rows"])
    assert dropped > 0 and all(r["samples"] == 16 for r in clean["rows"])
    states = list(clean["ledger"].values())
    assert states.count(SampleState.TRAINED) == 4 * 16
    assert states.count(SampleState.DROPPED) == 4 * sum(
        r["group/dropped"] + r["group/surplus"] for r in clean["rows"]
    )

    first = _run(_dynamic(make_config, "dyn-resume"), steps=2)
    assert len(first["rows"]) == 2

    def kill_mid_group(trainer):
        dispatch, count = trainer.runner._dispatch, [0]

        def patched(i, chunk):
            flight = dispatch(i, chunk)
            count[0] += 1
            if count[0] == 2:  # a group of step 3 in generation
                pid = ray.get(flight.actors[0].__ray_call__.remote(lambda s: os.getpid()))
                os.kill(pid, signal.SIGKILL)
            return flight

        trainer.runner._dispatch = patched

    second = _run(_dynamic(make_config, "dyn-resume"), patch=kill_mid_group)
    assert second["digests"] == clean["digests"]
    assert comparable(second["rows"]) == comparable(clean["rows"])
    assert second["ledger"] == clean["ledger"]
    assert second["rows"][-1]["faults/worker_restarts"] == 1
