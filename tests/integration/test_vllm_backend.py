"""The vLLM backend (``rollout.backend=vllm``, installed by ``launch/setup.sh --vllm``): runs that
learn, behaviour log-probs that match the learner's, new weights in the engine every step (by
the object store and by broadcast), and samples that depend on the sample id, not the worker.

``launch/test.sh`` installs vLLM, so CI runs all of these; they skip only in a checkout set up
without ``--vllm``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from trained import LEARNING

from rayrlhf.experience import PromptChunk
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.tiny_models import save_tiny_llama

pytest.importorskip("vllm", reason="vLLM not installed: bash launch/setup.sh --vllm")
pytestmark = pytest.mark.integration


def _run(cfg, run_dir: Path, then=None) -> list[dict]:
    trainer = OnlineTrainer(cfg, run_dir)
    try:
        history = trainer.run()
        if then is not None:
            then(trainer)
    finally:
        trainer.shutdown()
    return history


def test_vllm_ppo_learns_on_two_workers_fed_by_broadcast_and_samples_by_id(
    ray_local, make_config, tiny_vllm_model, tmp_path
):
    """PPO's learning test (reward = frequency of "good", about 3% at first) with two vLLM
    workers that receive every update by broadcast (the object-store path is the Llama test's
    below). The learner recomputes every behaviour log-prob: a step whose weights did not reach
    an engine shows as a mismatch of the size of the policy's change (0.01 and up here), a sign
    flip or a broken gradient as a reward that does not rise. After the run, one group's chunk
    generated on either worker gives the same samples, and the group's samples differ."""
    cfg = make_config(
        f"model.policy={tiny_vllm_model}",
        "rollout.backend=vllm",
        "rollout.num_workers=2",
        "weight_sync.method=broadcast",
        *LEARNING,
    )
    chunk = PromptChunk([f"x-0.{j}" for j in range(4)], ["the movie was very"] * 4, group_size=4)
    outputs: list = []

    def generate_on_both(trainer: OnlineTrainer) -> None:
        outputs.extend(ray.get([w.generate.remote(chunk) for w in trainer.rollout.actors]))

    history = _run(cfg, tmp_path / "run", generate_on_both)
    rewards = [m["reward/mean"] for m in history]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert first < 0.1, rewards
    assert last > 0.5 and last > first + 0.4, rewards
    mismatch = [m["rollout/logprob_mismatch"] for m in history]
    assert all(x < 1e-5 for x in mismatch), mismatch
    assert all(m["sync/bytes"] > 0 for m in history)
    assert all(m["policy/approx_kl"] > 0 for m in history[1:])  # the policy moved every step
    one, two = outputs
    assert one.responses == two.responses and (one.logprobs - two.logprobs).abs().max() < 1e-5
    assert len(set(one.responses)) > 1, one.responses  # per-sample seeds: the group differs


def test_vllm_grpo_on_a_llama_matches_the_learner_after_each_update(
    ray_local, make_config, tmp_path
):
    """Two GRPO steps on a tiny Llama laid out as SmolLM2 is (grouped-query attention, fused
    q/k/v and gate/up in vLLM, tied embeddings): the second step's samples come from the engine
    after its first in-place reload, and the learner's log-probs still match them; the weights
    go by the object store. Each sample is a multi-turn episode (rayrlhf.envs.words): vLLM stops
    a turn at the environment's stop word, the observation's ids are appended, and the
    learner's log-probs over prompt, turns and observations match the engine's at every
    sampled token. (The real SmolLM2 goes through vLLM in the README pipeline with
    ``--set rollout.backend=vllm`` and in ``benchmarks/ppo_backends.py``.)"""
    llama = save_tiny_llama(tmp_path / "llama")
    cfg = make_config(
        f"model.policy={llama}",
        "reward.function=rayrlhf.rewards.rules:brevity",
        "rollout.backend=vllm",
        "algorithm.name=grpo",
        "rollout.group_size=4",
        "rollout.prompts_per_step=4",
        "rollout.chunk_size=4",
        "rollout.max_new_tokens=12",
        "rollout.temperature=0.7",
        "run.num_steps=2",
        "learner.minibatch_size=16",
        "learner.micro_batch_size=4",
        "learner.policy_lr=1e-4",
        "learner.value_lr=1e-4",
        "ppo.kl_coef=0",  # no reference worker
        "rollout.environment=rayrlhf.envs.words:WordToolEnv",
        "rollout.max_turns=3",
        "rollout.max_episode_tokens=48",  # + 64 prompt tokens within the Llama's 128 positions
    )
    history = _run(cfg, tmp_path / "run")
    assert sum(m["episode/tool_calls"] for m in history) > 0  # episodes of several turns
    mismatch = [m["rollout/logprob_mismatch"] for m in history]
    # fp32 on both sides; vLLM's CPU kernels sum in another order.
    assert all(x < 1e-3 for x in mismatch), mismatch
    assert history[0]["policy/grad_norm"] > 0 and history[1]["policy_version"] == 2
