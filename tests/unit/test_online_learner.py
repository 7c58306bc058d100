"""The online learner built in-process, without Ray, as the supervised one is: one rank trains on
rollouts that in-process rollout, reward and reference workers made, checkpoints and resumes."""

from __future__ import annotations

import math

import pytest
from inprocess import setup_learner, step_config

from rayrlhf.experience import PromptChunk
from rayrlhf.metrics import comparable
from rayrlhf.roles.learner import Learner
from rayrlhf.roles.reference import ReferenceWorker
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker

PROMPTS = ["the movie was very", "a film is", "the plot", "this story was"]


def _config(tiny_model, prompts_file, *extra: str):
    return step_config(tiny_model, prompts_file, *extra)


def _step_inputs(config, step: int, version: int, weights=None) -> tuple[list, list, list]:
    """One chunk of step ``step`` through in-process workers holding policy ``version``."""
    worker = RolloutWorker(config)
    if weights is not None:
        worker.load_weights(weights, version)
    g = config.rollout.group_size
    prompts = PROMPTS[: len(PROMPTS) // g]
    ids = [
        f"{step}-{i}" + (f".{j}" if g > 1 else "") for i in range(len(prompts)) for j in range(g)
    ]
    chunk = PromptChunk(ids, [p for p in prompts for _ in range(g)], group_size=g)
    rollout = worker.generate(chunk)
    scores = RewardWorker(config.reward, "cpu").score(rollout)
    ref = ReferenceWorker(config).logprobs(rollout) if config.uses_reference else None
    return [rollout], [scores], [ref]


def _setup(config) -> Learner:
    return setup_learner(config)


def _train(learner: Learner, config, step: int) -> dict:
    weights = learner.policy_state_dict() if learner.policy_version else None
    return learner.train_step(*_step_inputs(config, step, learner.policy_version, weights))


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_online_learner_trains_in_process(tiny_model, prompts_file, algorithm):
    grpo = ["rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.chunk_size=2"]
    extra = grpo if algorithm == "grpo" else []
    config = _config(tiny_model, prompts_file, f"algorithm.name={algorithm}", *extra)
    learner = _setup(config)
    assert (learner.value is not None) == (algorithm == "ppo")
    before = learner.state_digest()
    metrics = _train(learner, config, 0)
    assert learner.policy_version == metrics["policy_version"] == 1
    assert metrics["samples"] == 4 and "kl/mean" in metrics
    assert ("loss/value" in metrics) == (algorithm == "ppo")
    assert ("loss/kl" in metrics) == (algorithm == "grpo")  # GRPO's KL sits in the loss
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    after = learner.state_digest()
    assert after["policy/params"] != before["policy/params"]
    # Fresh samples from the learner's own version: behaviour and learner log-probs agree.
    assert metrics["rollout/logprob_mismatch"] < 1e-4


def test_online_learner_resumes_exactly_in_process(tiny_model, prompts_file, tmp_path):
    config = _config(tiny_model, prompts_file, "ppo.kl_controller=adaptive")
    first = _setup(config)
    _train(first, config, 0)
    first.save_checkpoint(str(tmp_path / "ckpt"))
    saved_coef = first.kl_ctl.value  # moved by step 0's KL (adaptive)
    straight = _train(first, config, 1)
    second = _setup(config)
    second.load_checkpoint(str(tmp_path / "ckpt"))
    assert second.policy_version == 1
    assert second.kl_ctl.value == saved_coef != config.online.kl_coef
    resumed = _train(second, config, 1)
    assert first.state_digest() == second.state_digest()
    assert comparable([resumed]) == comparable([straight])


def test_one_rank_runs_zero_1_and_2_as_stage_0_and_reports_its_gradient_norm(
    tiny_model, prompts_file
):
    """On one rank ZeRO-1/2 shard nothing and only copy gradients: they run as stage 0, whose
    clipped gradient norm the step still reports (DeepSpeed's stage 0 drops it)."""
    config = _config(tiny_model, prompts_file, "learner.zero_stage=2")
    assert config.learner.effective_zero_stage == 0
    two = _config(
        tiny_model,
        prompts_file,
        "learner.zero_stage=2",
        "learner.num_ranks=2",
        "rollout.chunk_size=2",
        "learner.micro_batch_size=2",
    )
    assert two.learner.effective_zero_stage == 2
    three = _config(tiny_model, prompts_file, "learner.zero_stage=3")
    assert three.learner.effective_zero_stage == 3
    learner = _setup(config)
    assert learner.policy.zero_optimization_stage() == 0
    metrics = _train(learner, config, 0)
    assert metrics["policy/grad_norm"] > 0 and metrics["value/grad_norm"] > 0
    # The norm is the gradient's before clipping: clipping at a tiny norm leaves it as it is.
    clipped = _setup(_config(tiny_model, prompts_file, "learner.max_grad_norm=1e-6"))
    again = _train(clipped, config, 0)
    assert again["policy/grad_norm"] == pytest.approx(metrics["policy/grad_norm"], rel=1e-6)


def test_fresh_hf_samples_take_the_kl_from_the_sampler_and_save_a_forward(tiny_model, prompts_file):
    """PPO's KL sits in the reward: with fresh samples from the HF engine (the learner's model
    in its precision) the sampler's log-probs are the old ones to rounding, so the step skips
    the separate old-log-prob forward pass and trains as the recomputing step does."""
    import dataclasses

    config = _config(tiny_model, prompts_file)
    inputs = _step_inputs(config, 0, 0)
    runs = {}
    for reuse in (True, False):
        learner = _setup(config)
        assert learner.s.behaviour_is_old
        learner.s = dataclasses.replace(learner.s, behaviour_is_old=reuse)
        learner.update.s = learner.s
        calls: list[int] = []
        learner.policy.module.register_forward_pre_hook(lambda *_, c=calls: c.append(1))
        runs[reuse] = (learner.train_step(*inputs), len(calls))
    (reused, n_reused), (recomputed, n_recomputed) = runs[True], runs[False]
    assert n_recomputed - n_reused == 2  # the old-log-prob pass over two micro-batches, saved
    for key in ("kl/mean", "loss/policy", "loss/value", "policy/grad_norm", "reward/mean"):
        assert reused[key] == pytest.approx(recomputed[key], rel=1e-4, abs=1e-6), key
