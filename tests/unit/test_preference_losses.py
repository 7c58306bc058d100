"""DPO, conservative DPO and IPO losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rayrlhf.algos.preference_losses import dpo_loss, implicit_rewards, log_ratio_margin


def _t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


NO_TIE = torch.tensor([False])
TIE = torch.tensor([True])


def test_the_margin_is_the_difference_of_log_ratios():
    # chosen: −1 under the policy, −2 under the reference (+1); rejected: −3 vs −2 (−1).
    h = log_ratio_margin(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0))
    assert h.tolist() == [2.0]
    assert implicit_rewards(_t(-1.0), _t(-2.0), 0.1).item() == pytest.approx(0.1)


def test_equal_log_ratios_give_ln_2():
    """At the start the policy is the reference: every margin is 0, the loss ln 2."""
    loss = dpo_loss(_t(0.0, 0.0), torch.tensor([False, False]), beta=0.1)
    assert loss.tolist() == pytest.approx([math.log(2)] * 2)


def test_sigmoid_loss_and_label_smoothing():
    # βh = 1: −log σ(1) = 0.313262, −log σ(−1) = 1.313262.
    assert dpo_loss(_t(10.0), NO_TIE, beta=0.1).item() == pytest.approx(0.3132617, abs=1e-6)
    smoothed = dpo_loss(_t(10.0), NO_TIE, beta=0.1, label_smoothing=0.1).item()
    assert smoothed == pytest.approx(0.9 * 0.3132617 + 0.1 * 1.3132617, abs=1e-6)


def test_a_tie_has_target_one_half_whatever_the_smoothing():
    # βh = 2: ½·(−log σ(2) − log σ(−2)) = ½·(0.126928 + 2.126928).
    for eps in (0.0, 0.2):
        loss = dpo_loss(_t(20.0), TIE, beta=0.1, label_smoothing=eps).item()
        assert loss == pytest.approx(0.5 * (0.1269280 + 2.1269280), abs=1e-6)
    # ... and is least at margin 0, where it is ln 2.
    assert dpo_loss(_t(0.0), TIE, beta=0.1).item() == pytest.approx(math.log(2))


def test_ipo_regresses_the_margin_to_one_over_two_beta():
    # β = 0.5: target margin 1; h = 2 → (2 − 1)² = 1; a tie's target is 0 → 4.
    assert dpo_loss(_t(2.0), NO_TIE, beta=0.5, kind="ipo").item() == pytest.approx(1.0)
    assert dpo_loss(_t(1.0), NO_TIE, beta=0.5, kind="ipo").item() == pytest.approx(0.0)
    assert dpo_loss(_t(2.0), TIE, beta=0.5, kind="ipo").item() == pytest.approx(4.0)


def test_the_gradient_raises_the_chosen_and_lowers_the_rejected():
    chosen, rejected = _t(-2.0).requires_grad_(), _t(-2.0).requires_grad_()
    h = log_ratio_margin(chosen, rejected, _t(-2.0), _t(-2.0))
    dpo_loss(h, NO_TIE, beta=0.1).sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descent raises chosen, lowers rejected


def test_an_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown preference loss 'hinge'"):
        dpo_loss(_t(0.0), NO_TIE, beta=0.1, kind="hinge")
