"""Roles built in-process (no Ray): generation layout, behaviour log-probs, weight loading."""

from __future__ import annotations

import pytest
import torch

from rayrlhf.experience import PromptChunk
from rayrlhf.forward import response_logprobs
from rayrlhf.models import load_policy
from rayrlhf.roles.reference import ReferenceWorker
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker
from rayrlhf.weights.transport import load_full_state_dict

CHUNK = PromptChunk(["0-0", "0-1", "0-2"], ["the movie was very", "a film", "the plot is not"])


@pytest.fixture(scope="module")
def worker_and_rollout(tiny_model, prompts_file):
    from rayrlhf.config import load

    cfg = load(
        None,
        [
            f"model.policy={tiny_model}",
            f"data.prompts={prompts_file}",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
            "rollout.max_new_tokens=12",
            "rollout.temperature=0.7",
        ],
    )
    worker = RolloutWorker(cfg)
    return cfg, worker, worker.generate(CHUNK)


def test_rollout_layout_and_eos_in_mask(worker_and_rollout):
    cfg, worker, ro = worker_and_rollout
    eos = worker.tokenizer.eos_token_id
    assert worker.tokenizer.pad_token_id == eos  # the trap this layout must survive
    assert ro.prompt_ids.shape[0] == 3 and ro.prompt_mask[1, 0] == 0  # left-padded shorter prompt
    assert ro.sample_ids == CHUNK.sample_ids and ro.policy_version == 0
    for row in range(3):
        n = int(ro.response_mask[row].sum())
        ids = ro.response_ids[row]
        if n < ids.shape[0] or ids[-1] == eos:
            assert ids[n - 1] == eos, "the EOS that ended the response must be inside the mask"
        assert (ro.logprobs[row, n:] == 0).all() and (ro.logprobs[row, :n] < 0).all()


def test_behaviour_logprobs_match_a_forward_pass(worker_and_rollout):
    cfg, worker, ro = worker_and_rollout
    logprobs, _ = response_logprobs(
        worker.engine.model, ro.input_ids, ro.attention_mask, ro.prompt_ids.shape[1], 0.7
    )
    diff = ((logprobs - ro.logprobs) * ro.response_mask).abs().max()
    assert diff < 1e-4  # same positions, same temperature: generation and training agree


def test_reference_equals_policy_before_training(worker_and_rollout):
    cfg, worker, ro = worker_and_rollout
    ref = ReferenceWorker(cfg).logprobs(ro)
    assert torch.allclose(ref.logprobs, ro.logprobs, atol=1e-4)


def test_chunk_seeded_generation_is_worker_independent(worker_and_rollout):
    cfg, worker, ro = worker_and_rollout
    other = RolloutWorker(cfg, worker_index=5)
    assert torch.equal(other.generate(CHUNK).response_ids, ro.response_ids)


def test_load_weights_sets_version_and_values(worker_and_rollout, tiny_model):
    cfg, _, ro = worker_and_rollout
    worker = RolloutWorker(cfg)
    new = {n: torch.zeros_like(p) for n, p in load_policy(str(tiny_model)).named_parameters()}
    assert worker.load_weights(new, 7) == 7
    assert worker.get_policy_version() == 7
    assert worker.weights_checksum() == 0.0
    assert worker.generate(CHUNK).policy_version == 7


def test_load_weights_rejects_mismatched_names(tiny_model):
    model = load_policy(str(tiny_model))
    sd = {n: p.detach().clone() for n, p in model.named_parameters()}
    sd.pop(next(iter(sd)))
    with pytest.raises(ValueError, match="weight sync mismatch"):
        load_full_state_dict(model, sd)


def test_reward_worker_scores_a_rollout(worker_and_rollout):
    cfg, _, ro = worker_and_rollout
    scores = RewardWorker(cfg.reward).score(ro)
    assert scores.sample_ids == ro.sample_ids
    assert scores.rewards.shape == (3,)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_reward_model_scores(worker_and_rollout, tmp_path, num_labels):
    from rayrlhf.config import RewardConfig
    from rayrlhf.tiny_models import save_tiny_reward_model

    _, _, ro = worker_and_rollout
    path = save_tiny_reward_model(tmp_path / "rm", num_labels=num_labels)
    scores = RewardWorker(RewardConfig(model=str(path), batch_size=2)).score(ro)
    assert scores.rewards.shape == (3,) and torch.isfinite(scores.rewards).all()
    # Batching must not change a row's score (padding is masked).
    single = RewardWorker(RewardConfig(model=str(path), batch_size=1)).score(ro)
    assert torch.allclose(single.rewards, scores.rewards, atol=1e-4)


def test_long_prompts_keep_their_last_tokens(worker_and_rollout):
    cfg, worker, _ = worker_and_rollout
    long_prompt = "bad " * 100 + "the movie was"
    ro = worker.generate(PromptChunk(["9-0"], [long_prompt]))
    assert ro.prompt_ids.shape[1] == cfg.rollout.max_prompt_tokens
    tail = worker.tokenizer.decode(ro.prompt_ids[0, -3:])
    assert tail == "the movie was"


def test_learner_refuses_a_non_finite_loss(worker_and_rollout):
    from rayrlhf.roles.rank_engine import NonFiniteError, RankEngine

    cfg, _, _ = worker_and_rollout
    # No engines needed: the guard runs before any optimizer step.
    rank = RankEngine(cfg.learner, rank=0, seed=0, timeout_s=60.0)
    with pytest.raises(NonFiniteError, match="loss/policy is nan on rank 0"):
        rank.check_finite("loss/policy", torch.tensor(float("nan")), "policy_version 0")
    rank.check_finite("loss/policy", torch.tensor(1.0), "policy_version 0")
