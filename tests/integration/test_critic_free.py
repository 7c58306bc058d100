"""GRPO, RLOO and the rest on a local Ray: they learn, hold no critic, survive and resume exactly.

The same rollout, reward and reference workers and the same learner class as PPO; only the
``algorithm`` section differs.
"""

from __future__ import annotations

import shutil

import pytest
import ray
from trained import assert_learns, kill_rollout_at_dispatch, train

from rayrlhf.buffer import SampleState
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.metrics import comparable
from rayrlhf.weights.transport import unflatten_params

pytestmark = pytest.mark.integration

GROUPS = ("rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.chunk_size=2")


def _names(trainer: OnlineTrainer, role: str) -> list[str]:
    prefix = f"{trainer.config.run.name}-"
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix) and f"/{role}-" in a["name"]
    ]


def _learning(make_config, algorithm: str, ranks: int, name: str):
    return make_config(
        f"algorithm.name={algorithm}",
        f"run.name={name}",
        *GROUPS,
        "run.num_steps=16",
        "run.checkpoint_every=16",
        f"learner.num_ranks={ranks}",
        "learner.minibatch_size=32",  # the whole step: the same minibatches on 1 or 2 ranks
        "learner.micro_batch_size=16",
        "learner.ppo_epochs=4",
        "ppo.kl_coef=0.01",
    )


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_critic_free_policy_learns_with_no_value_model(ray_local, make_config, tmp_path, algorithm):
    """Reward = frequency of "good" (about 3% for the random policy), as in PPO's test: a
    flipped advantage sign drives it to 0, a missing weight sync is refused by the learner.

    GRPO's first two steps are also run on 2 learner ranks: GRPO's per-sequence loss mean is
    divided by the global row count, so the parameters must agree (a per-rank normalisation
    breaks it)."""
    trainer = OnlineTrainer(_learning(make_config, algorithm, 1, algorithm), tmp_path / "run")
    try:
        assert all(
            ray.get(
                [a.__ray_call__.remote(lambda s: s.value is None) for a in trainer.learners.actors]
            )
        )
        assert len(_names(trainer, "reference")) == 1  # KL coefficient 0.01: a reference runs
        history = trainer.run(2)
        weights = unflatten_params(ray.get(trainer.learners.policy_weights()))
        history += trainer.run()
    finally:
        trainer.shutdown()
    assert_learns(history)
    assert all(m["samples"] == 32 and "loss/value" not in m for m in history)
    assert "value/grad_norm" not in history[-1] and history[-1]["group/reward_std"] > 0
    assert history[-1]["kl/mean"] > 0 and (algorithm != "grpo" or history[-1]["loss/kl"] > 0)
    parts = {p.name for p in (tmp_path / "run/checkpoints/step-00000016/learner").iterdir()}
    assert "policy" in parts and "value" not in parts
    if algorithm != "grpo":
        return
    two = OnlineTrainer(_learning(make_config, "grpo", 2, "grpo2"), tmp_path / "two")
    try:
        two_history = two.run(2)
        two_weights = unflatten_params(ray.get(two.learners.policy_weights()))
        assert all(
            set(d) == {"policy/params", "policy/optimizer"} for d in two.learners.state_digests()
        )
    finally:
        two.shutdown()
    for key in ("reward/mean", "policy/grad_norm", "loss/kl"):
        expected = [m[key] for m in history[:2]]
        assert [m[key] for m in two_history] == pytest.approx(expected, rel=1e-4, abs=1e-6), key
    # At lr 1e-3 Adam turns float-order noise in near-zero gradients into differences of up to
    # a few percent of one step (2e-5 seen); a wrong loss scale, which Adam would hide in the
    # parameters, shows in the gradient norms above.
    diff = max((two_weights[n] - w).abs().max().item() for n, w in weights.items())
    assert diff < 1e-4, f"1 vs 2 ranks: max parameter difference {diff}"


def _dynamic(make_config, name: str, *extra: str):
    return make_config(
        "algorithm.name=grpo",
        "algorithm.dynamic_sampling=true",
        "ppo.kl_coef=0",
        "reward.function=rayrlhf.rewards.rules:contains_target_word",
        f"run.name={name}",
        "run.num_steps=4",
        "run.checkpoint_every=2",
        "rollout.prompts_per_step=4",
        "rollout.group_size=4",
        "rollout.chunk_size=1",
        "learner.minibatch_size=16",
        "learner.micro_batch_size=4",
        *extra,
    )


def test_grpo_dynamic_sampling_resumes_exactly_with_a_worker_killed_mid_group(
    ray_local, make_config
):
    """4 steps straight, against a copy of that run's folder at step 2 resumed for 2 more steps
    during which a rollout worker is killed while it generates a group: equal parameters,
    optimizer state, metrics and ledger. Pass/fail rewards make many groups all-equal, so the
    steps draw extra prompts: the resumed run must continue from the same prompt position."""
    refs: list[str] = []

    def stop_and_copy(trainer: OnlineTrainer) -> None:
        # The interrupted run is a copy of the clean one's folder at its step-2 checkpoint.
        refs.extend(_names(trainer, "reference"))
        trainer.run(2)
        shutil.copytree(trainer.run_dir, trainer.run_dir.parent / "dyn-resume")

    clean = train(_dynamic(make_config, "dyn-clean"), patch=stop_and_copy)
    assert refs == []  # KL coefficient 0: no reference worker started
    dropped = sum(r["group/dropped"] for r in clean["rows"])
    assert dropped > 0 and all(r["samples"] == 16 for r in clean["rows"])
    states = list(clean["ledger"].values())
    assert states.count(SampleState.TRAINED) == 4 * 16
    assert states.count(SampleState.DROPPED) == 4 * sum(
        r["group/dropped"] + r["group/surplus"] for r in clean["rows"]
    )

    # The second chunk dispatched after the resume: a group of step 3 in generation.
    second = train(_dynamic(make_config, "dyn-resume"), patch=kill_rollout_at_dispatch(2))
    assert second["digests"] == clean["digests"]
    assert comparable(second["rows"]) == comparable(clean["rows"])
    assert second["ledger"] == clean["ledger"]
    assert second["rows"][-1]["faults/worker_restarts"] == 1
