"""Unit tests for rayrlhf.algos against hand-computed values.

Every expected number is written out explicitly (with the arithmetic in a
comment) rather than produced by a second implementation of the same formula.
"""

from __future__ import annotations

import math

import pytest
import torch
from hand_computed import close, policy_case

from rayrlhf.algos.advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, AdvantageParams, gae
from rayrlhf.algos.kl import (
    KL_CONTROLLERS,
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_k1,
    kl_k2,
    kl_k3,
    token_rewards,
)
from rayrlhf.algos.losses import (
    entropy_from_logits,
    logprobs_from_logits,
    policy_loss,
    value_loss,
)
from rayrlhf.algos.masking import masked_mean, masked_sum, masked_var, masked_whiten

# --------------------------------------------------------------------------- masking


def test_masked_mean_ignores_masked_values() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    close(masked_mean(x, mask), 2.5)  # (1+2+3+4)/4
    close(masked_mean(x, mask, dim=-1), [1.5, 3.5])
    close(masked_mean(x, mask.bool(), dim=0), [2.0, 3.0, 0.0])  # empty column -> 0, not NaN
    close(masked_sum(x, mask), 10.0)


def test_masked_reductions_do_not_propagate_nan_from_padding() -> None:
    x = torch.tensor([[1.0, 3.0, float("nan")], [2.0, float("-inf"), 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(masked_sum(x, mask), 6.0)
    close(masked_mean(x, mask), 2.0)


def test_masked_var_unbiased_and_biased() -> None:
    x = torch.tensor([[1.0, 2.0, 50.0], [3.0, 4.0, -7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # mean 2.5, squared deviations 2.25+0.25+0.25+2.25 = 5
    close(masked_var(x, mask), 5.0 / 3.0)
    close(masked_var(x, mask, unbiased=False), 1.25)


def test_masked_whiten_zero_mean_unit_var_and_zero_padding() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 6.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    out = masked_whiten(x, mask)
    # masked values 1..6: mean 3.5, unbiased var 17.5/5 = 3.5, sqrt(3.5) = 1.8708287
    close(out[0, 0], -1.3363062)  # (1 - 3.5) / 1.8708287
    close(out[1, 2], 1.3363062)
    close(out[:, 3], [0.0, 0.0])
    close(masked_mean(out, mask), 0.0)
    close(masked_var(out, mask), 1.0)


def test_masked_whiten_no_shift_and_external_stats() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 6.0, -50.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    out = masked_whiten(x, mask, shift_mean=False)
    close(out[0, 0], 2.1636938)  # -1.3363062 + 3.5
    close(out[0, 3], 0.0)
    # global stats from a distributed caller are used verbatim: (x - 1) / sqrt(4)
    out = masked_whiten(x, mask, mean=torch.tensor(1.0), var=torch.tensor(4.0), eps=0.0)
    close(out, [[0.0, 0.5, 1.0, 0.0], [1.5, 2.0, 2.5, 0.0]])


# --------------------------------------------------------------------------- GAE


def test_gae_hand_computed_with_trailing_padding() -> None:
    gamma, lam = 0.9, 0.8  # gamma * lambda = 0.72
    rewards = torch.tensor([[1.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 3.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    out = gae(rewards, values, mask, gamma, lam)
    # row 0 (padding at t=3 must be ignored: the episode ends after t=2):
    #   t=2: delta = 2 - 1.5 = 0.5                 A = 0.5
    #   t=1: delta = 0 + 0.9*1.5 - 1.0 = 0.35      A = 0.35 + 0.72*0.5 = 0.71
    #   t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4       A = 1.4 + 0.72*0.71 = 1.9112
    # row 1 (zero values): A = 0.72^k: 1, 0.72, 0.5184, 0.373248
    close(out.advantages, [[1.9112, 0.71, 0.5, 0.0], [0.373248, 0.5184, 0.72, 1.0]])
    # returns = A + V, 0 on padding
    close(out.returns, [[2.4112, 1.71, 2.0, 0.0], [0.373248, 0.5184, 0.72, 1.0]])


def test_gae_does_not_mutate_inputs_or_track_grad() -> None:
    rewards = torch.tensor([[1.0, 2.0]])
    values = torch.tensor([[0.5, 0.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0]])
    out = gae(rewards, values, mask, 1.0, 1.0)
    assert not out.advantages.requires_grad and not out.returns.requires_grad
    close(rewards, [[1.0, 2.0]])
    close(values.detach(), [[0.5, 0.5]])
    # gamma = lambda = 1: A_t = sum of future rewards - V_t -> [3 - 0.5, 2 - 0.5]
    close(out.advantages, [[2.5, 1.5]])
    table = ADVANTAGE_ESTIMATORS["gae"](
        AdvantageInputs(rewards, mask, torch.zeros(1), values), AdvantageParams(1.0, 1.0)
    )
    close(table.advantages, [[2.5, 1.5]])  # the table entry is the same estimator


# --------------------------------------------------------------------------- KL


def test_kl_estimators_known_values() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.3]]))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.3]]))
    ln2 = 0.6931472
    close(kl_k1(logp, ref), [[ln2, -ln2, 0.0]])
    close(kl_k2(logp, ref), [[0.2402265, 0.2402265, 0.0]])  # 0.5 * ln2^2
    # k3 = q/p - 1 - ln(q/p): 0.5 - 1 + ln2 = 0.1931472 ; 2 - 1 - ln2 = 0.3068528
    close(kl_k3(logp, ref), [[0.1931472, 0.3068528, 0.0]])
    assert KL_ESTIMATORS == {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def test_kl_k3_is_nonnegative() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(64, 32, generator=gen) * 3
    ref = torch.randn(64, 32, generator=gen) * 3
    assert bool((kl_k3(logp, ref) >= 0).all())
    assert bool((kl_k2(logp, ref) >= 0).all())


def test_token_rewards_score_on_last_valid_token() -> None:
    pad_id = eos_id = 0
    # row 0 ends with an EOS whose id equals pad: ids [7, 0, 0, 0] but the mask says
    # the response is 2 tokens long, so the score belongs at index 1, not index 0.
    ids = torch.tensor([[7, eos_id, pad_id, pad_id], [3, 4, 5, 6]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert ids[0, 1] == pad_id
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    scores = torch.tensor([1.0, -2.0])
    out = token_rewards(scores, kl, mask, kl_coef=0.5)
    # -0.5*kl on valid tokens, + score at the last valid token, 0 on padding
    close(out, [[-0.05, 0.9, 0.0, 0.0], [-0.25, -0.3, -0.35, -2.4]])


def test_token_rewards_rejects_empty_rows() -> None:
    mask = torch.tensor([[1, 0], [0, 0]])
    with pytest.raises(ValueError, match="empty"):
        token_rewards(torch.zeros(2), torch.zeros(2, 2), mask, kl_coef=0.1)


def test_fixed_kl_controller() -> None:
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=1000)
    assert ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05
    assert KL_CONTROLLERS["fixed"] is FixedKLController


@pytest.mark.parametrize(
    ("current_kl", "expected"),
    [
        (12.0, 0.100512),  # error 1.0 clipped to +0.2: 0.1 * (1 + 0.2 * 256/10000)
        (6.6, 0.100256),  # error +0.1: 0.1 * (1 + 0.1 * 0.0256)
        (6.0, 0.1),  # on target: unchanged
        (5.4, 0.099744),  # error -0.1: 0.1 * (1 - 0.1 * 0.0256)
        (0.0, 0.099488),  # error -1.0 clipped to -0.2: 0.1 * (1 - 0.2 * 0.0256)
    ],
)
def test_adaptive_kl_controller(current_kl: float, expected: float) -> None:
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=current_kl, n_steps=256)
    assert math.isclose(ctl.value, expected, rel_tol=0, abs_tol=1e-9)


def test_adaptive_kl_controller_validation_and_state() -> None:
    for bad in ({"init_kl_coef": 0.0}, {"target": -1.0}, {"horizon": 0}):
        kwargs = {"init_kl_coef": 0.1, "target": 6.0, "horizon": 100.0, **bad}
        with pytest.raises(ValueError):
            AdaptiveKLController(**kwargs)
    ctl = AdaptiveKLController(0.1, 6.0, 100.0)
    ctl.update(12.0, 10)  # 0.1 * (1 + 0.2 * 0.1) = 0.102
    restored = AdaptiveKLController(0.5, 6.0, 100.0)
    restored.load_state_dict(ctl.state_dict())
    assert math.isclose(restored.value, 0.102, abs_tol=1e-12)
    assert KL_CONTROLLERS["adaptive"] is AdaptiveKLController


# --------------------------------------------------------------------------- losses


def test_logprobs_and_entropy_from_logits() -> None:
    # probs [0.25, 0.5, 0.25] and uniform over 3
    logits = torch.log(torch.tensor([[[1.0, 2.0, 1.0], [5.0, 5.0, 5.0]]])).to(torch.bfloat16)
    labels = torch.tensor([[1, 2]])
    lp = logprobs_from_logits(logits, labels)
    assert lp.dtype == torch.float32 and lp.shape == (1, 2)
    close(lp, [[-0.6931472, -1.0986123]], atol=1e-2)  # ln 0.5, ln(1/3)
    ent = entropy_from_logits(logits)
    assert ent.dtype == torch.float32 and ent.shape == (1, 2)
    # -(2 * 0.25 ln 0.25 + 0.5 ln 0.5) = 1.0397208 ; ln 3 = 1.0986123
    close(ent, [[1.0397208, 1.0986123]], atol=1e-2)


def test_policy_loss_clipping_hand_computed() -> None:
    logp, old, adv, mask = policy_case()
    out = policy_loss(logp, old, adv, mask, clip_range=0.2)
    # per token max(-A*r, -A*clip(r, 0.8, 1.2)):
    #   (1.5,+1): max(-1.5, -1.2) = -1.2  clipped
    #   (0.5,+1): max(-0.5, -0.8) = -0.5
    #   (1.5,-1): max( 1.5,  1.2) =  1.5
    #   (0.5,-1): max( 0.5,  0.8) =  0.8  clipped
    #   (1.1,+2): max(-2.2, -2.2) = -2.2
    # token mean over the 5 valid tokens: -1.6 / 5 = -0.32 (mean of row means: -0.3833)
    close(out.loss, -0.32)
    close(out.clip_fraction, 0.4)
    # 0.5 * mean(ln1.5^2, ln0.5^2, ln1.5^2, ln0.5^2, ln1.1^2)
    #   = 0.5 * (2*0.1644020 + 2*0.4804530 + 0.0090840) / 5 = 0.1298794
    close(out.approx_kl, 0.1298794)
    assert not out.clip_fraction.requires_grad and not out.approx_kl.requires_grad


def test_policy_loss_gradient_zero_where_clipped() -> None:
    logp, old, adv, mask = policy_case()
    policy_loss(logp, old, adv, mask, clip_range=0.2).loss.backward()
    # d/dlogp of -A*r is -A*r on unclipped tokens, 0 on clipped / padded ones, /5
    close(logp.grad, [[0.0, -0.1, 0.3], [0.0, -0.44, 0.0]])


def test_value_loss_clipping_hand_computed() -> None:
    old = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    values = torch.tensor([[1.5, 1.5, 0.1], [-0.5, 5.0, 0.0]], requires_grad=True)
    returns = torch.tensor([[2.0, 1.0, 1.0], [-1.0, -5.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = value_loss(values, old, returns, mask, clip_range=0.2)
    # v_clip = old + clamp(v - old, +-0.2); max((v-R)^2, (v_clip-R)^2):
    #   v=1.5,R=2 : v_clip 1.2 -> max(0.25, 0.64) = 0.64  clipped
    #   v=1.5,R=1 : v_clip 1.2 -> max(0.25, 0.04) = 0.25
    #   v=0.1,R=1 : inside     -> 0.81 (tie, not counted as clipped)
    #   v=-.5,R=-1: v_clip -.2 -> max(0.25, 0.64) = 0.64  clipped
    # 0.5 * (0.64 + 0.25 + 0.81 + 0.64) / 4 = 0.2925
    close(out.loss, 0.2925)
    close(out.clip_fraction, 0.5)
    out.loss.backward()
    # grad only through unclipped winners: 0.5 * 2 * (v - R) / 4
    close(values.grad, [[0.0, 0.125, -0.225], [0.0, 0.0, 0.0]])
