"""The engine–trainer correction (algorithm.rollout_correction): its weights against hand-computed
values, and the learner using them: a sign or a cap error fails here."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from inprocess import setup_learner, step_config

from rayrlhf.algos.rollout_correction import DEFAULT_CAPS, correction_weights, mismatch_kl
from rayrlhf.experience import PromptChunk
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker

L = math.log


def _close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def _lp(*ratios: float) -> torch.Tensor:
    """(1, T) train log-probs whose ratio to rollout log-probs of 0 is ``ratios``."""
    return torch.tensor([[L(r) for r in ratios]])


def test_tis_truncates_the_ratio_of_train_to_rollout_at_the_cap():
    c = correction_weights(_lp(3.0, 0.5, 1.5), torch.zeros(1, 3), torch.ones(1, 3), "tis", 2.0)
    _close(c.weights, [[2.0, 0.5, 1.5]])  # rollout/train: [1/3, 2, ..]
    assert c.affected.tolist() == [[True, False, False]]


def test_seq_mask_weights_a_sequence_by_its_ratio_and_drops_it_above_the_cap():
    train = torch.tensor([[L(1.5), L(1.5), 0.0], [L(2.0), L(2.0), L(9.0)]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    c = correction_weights(train, torch.zeros(2, 3), mask, "seq_mask", 3.0)
    # Row 0: 1.5 · 1.5 = 2.25 ≤ 3 (its off-mask token does not count); row 1: 36 > 3, dropped.
    _close(c.weights, [[2.25, 2.25, 0.0], [0.0, 0.0, 0.0]])
    assert c.affected.tolist() == [[False, False, False], [True, True, True]]
    low = correction_weights(_lp(0.5, 0.5), torch.zeros(1, 2), torch.ones(1, 2), "seq_mask", 3.0)
    _close(low.weights, [[0.25, 0.25]])  # one-sided: kept below 1


def test_icepop_keeps_tokens_inside_the_band_with_their_ratio():
    c = correction_weights(
        _lp(0.4, 1.2, 6.0, 0.5), torch.zeros(1, 4), torch.ones(1, 4), "icepop", 5.0, low=0.5
    )
    _close(c.weights, [[0.0, 1.2, 0.0, 0.5]])
    assert c.affected.tolist() == [[True, False, True, False]]


def test_weights_are_zero_off_the_mask_and_survive_huge_gaps():
    train = torch.tensor([[200.0, -200.0, 0.0]])  # exp would overflow without the clamp
    for mode in ("tis", "seq_mask", "icepop"):
        c = correction_weights(train, torch.zeros(1, 3), torch.tensor([[1, 1, 0]]), mode, 3.0)
        assert torch.isfinite(c.weights).all() and c.weights[0, 2] == 0.0, mode


def test_mismatch_kl_is_k3_of_the_ratio():
    kl = mismatch_kl(_lp(2.0, 1.0, 0.5), torch.zeros(1, 3))
    _close(kl, [[1 - L(2.0), 0.0, -0.5 + L(2.0)]])
    assert (kl >= 0).all()


def _grpo(tiny_model, prompts_file, *extra: str):
    return step_config(
        tiny_model,
        prompts_file,
        "algorithm.name=grpo",
        "online.kl_coef=0",
        "reward.function=rayrlhf.rewards.rules:brevity",
        "rollout.group_size=4",
        "rollout.prompts_per_step=1",
        "rollout.chunk_size=1",
        "learner.minibatch_size=4",
        "learner.micro_batch_size=4",
        "learner.policy_lr=1e-30",  # weights that do not move: one learner serves every mode
        *extra,
    )


@pytest.fixture(scope="module")
def corrected(tiny_model, prompts_file):
    """A learner set up with tis, and one GRPO chunk from an in-process worker."""
    config = _grpo(tiny_model, prompts_file, "algorithm.rollout_correction=tis")
    chunk = PromptChunk([f"0-0.{j}" for j in range(4)], ["the movie was very"] * 4, group_size=4)
    rollout = RolloutWorker(config).generate(chunk)
    scores = RewardWorker(config.reward, "cpu").score(rollout)
    return setup_learner(config), rollout, scores


def _step(learner, rollout, scores, mode: str, shift_row0: float = 0.0) -> dict:
    """One step in ``mode`` on the chunk, row 0's rollout log-probs lowered by ``shift_row0``
    per token (an engine that found those tokens less likely than the trainer)."""
    moved = dataclasses.replace(rollout, logprobs=rollout.logprobs.clone())
    moved.logprobs[0] -= shift_row0 * rollout.response_mask[0]
    cap = DEFAULT_CAPS.get(mode, 1.0)
    learner.s = learner.update.s = dataclasses.replace(
        learner.s, rollout_correction=mode, correction_cap=cap, behaviour_is_old=False
    )
    learner.policy_version = 0  # the chunk's version: the weights never moved
    return learner.train_step([moved], [scores], [None])


def test_the_learner_weights_its_loss_by_the_correction(corrected):
    """In fp32 on the CPU the HF engine's log-probs are the trainer's to rounding: weights 1,
    KL ≈ 0. An engine 3 nats off on one row: tis truncates that row (ρ = e³ > 2), seq_mask drops
    it, and the loss moves off the uncorrected one."""
    learner, rollout, scores = corrected
    assert not learner.s.behaviour_is_old  # the trainer's own log-probs, to compare
    m = _step(learner, rollout, scores, "tis")
    assert m["rollout_correction/weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert m["rollout_correction/affected_fraction"] == 0.0
    assert 0.0 <= m["rollout_correction/mismatch_kl"] < 1e-6
    row0 = float(rollout.response_mask[0].sum() / rollout.response_mask.sum())
    losses = {}
    for mode in ("none", "tis", "seq_mask"):
        m = _step(learner, rollout, scores, mode, shift_row0=3.0)
        losses[mode] = m["loss/policy"]
        if mode != "none":
            assert m["rollout_correction/affected_fraction"] == pytest.approx(row0), mode
            assert m["rollout_correction/mismatch_kl"] > 1.0, mode  # e³ − 1 − 3 on row 0
        else:
            assert "rollout_correction/weight_mean" not in m
    assert len({round(v, 9) for v in losses.values()}) == 3


def test_with_stale_samples_the_correction_replaces_the_decoupled_weight(corrected):
    """Asynchronous: tis takes the smaller of its cap and behaviour_weight_cap; the weights are
    not multiplied by the decoupled ones (the ratio would count twice)."""
    update = corrected[0].update
    train, rollout, mask = _lp(4.0, 1.5), torch.zeros(1, 2), torch.ones(1, 2)
    for cap, behaviour_cap, expected in ((3.0, 5.0, 3.0), (3.0, 2.0, 2.0)):
        update.s = dataclasses.replace(
            update.s,
            rollout_correction="tis",
            max_staleness=1,
            correction_cap=cap,
            behaviour_weight_cap=behaviour_cap,
        )
        w, stats = update._token_weights(train, rollout, mask)
        _close(w, [[expected, 1.5]])
        assert "off_policy/weight_mean" not in stats
