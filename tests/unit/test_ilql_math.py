"""ILQL's loss terms, target sync and decoding against values worked out by hand (V = 3)."""

from __future__ import annotations

import math

import pytest
import torch

from rayrlhf.algos.ilql import (
    ilql_logprobs,
    ilql_loss,
    last_action_rewards,
    polyak_update,
    score_statistics,
)


def _ce(values: list[float], taken: int) -> float:
    """−log softmax(values)[taken], by hand."""
    return math.log(sum(math.exp(x) for x in values)) - values[taken]


LOGITS = [[1.0, 0.0, 0.5], [0.2, 0.1, 0.9]]
Q0 = [[0.1, 0.3, -0.2], [0.0, 0.4, 0.6]]
Q1 = [[0.2, 0.0, 0.1], [0.1, 0.2, 0.5]]
T0 = [[0.3, 0.0, 0.0], [0.0, 0.0, 0.8]]
T1 = [[0.4, 0.0, 0.0], [0.0, 0.0, 0.7]]
ACTIONS = [0, 2]  # two actions; the reward 1 sits on the last


def _loss(pad: bool = False, beta: float = 0.0):
    def t(rows, extra):
        return torch.tensor([rows + ([extra] if pad else [])], dtype=torch.float64)

    junk = [50.0, -50.0, 50.0]  # a padded action: must change nothing
    vs = torch.tensor([[0.5, 0.2, 9.0] + ([-7.0] if pad else [])], dtype=torch.float64)
    not_done = torch.tensor([[1, 1, 0] + ([0] if pad else [])])
    return ilql_loss(
        t(LOGITS, junk),
        [t(Q0, junk), t(Q1, junk)],
        [t(T0, junk), t(T1, junk)],
        vs,
        torch.tensor([ACTIONS + ([1] if pad else [])]),
        torch.tensor([[0.0, 1.0] + ([5.0] if pad else [])], dtype=torch.float64),
        not_done,
        gamma=0.9,
        tau=0.7,
        cql_scale=0.1,
        awac_scale=1.0,
        beta=beta,
    )


def test_each_term_against_its_hand_value():
    loss, terms = _loss()
    # Q target: r + γ·V(s′)·not_done = [0 + 0.9·0.2, 1 + 0.9·9·0] = [0.18, 1.0] (terminal V out).
    q = ((0.1 - 0.18) ** 2 + (0.6 - 1.0) ** 2 + (0.2 - 0.18) ** 2 + (0.5 - 1.0) ** 2) / 2
    assert terms["q"].item() == pytest.approx(q)
    # V toward min target Q [min(0.3, 0.4), min(0.8, 0.7)] = [0.3, 0.7]; V = [0.5, 0.2]:
    # below (weight 1 − τ = 0.3) by 0.2, above (τ = 0.7) by 0.5.
    assert terms["v"].item() == pytest.approx((0.3 * 0.2**2 + 0.7 * 0.5**2) / 2)
    cql = sum(_ce(head[i], a) for head in (Q0, Q1) for i, a in enumerate(ACTIONS)) / 2
    assert terms["cql"].item() == pytest.approx(cql)
    awac = sum(_ce(LOGITS[i], a) for i, a in enumerate(ACTIONS)) / 2
    assert terms["awac"].item() == pytest.approx(awac)
    assert loss.item() == pytest.approx(q + terms["v"].item() + 0.1 * cql + awac)


def test_awac_weights_cloning_by_the_advantage():
    _, terms = _loss(beta=1.0)
    # exp(β·(min target Q − V)) = exp(0.3 − 0.5), exp(0.7 − 0.2)
    weights = [math.exp(-0.2), math.exp(0.5)]
    pairs = zip(weights, enumerate(ACTIONS), strict=True)
    awac = sum(w * _ce(LOGITS[i], a) for w, (i, a) in pairs) / 2
    assert terms["awac"].item() == pytest.approx(awac)


def test_padded_actions_and_the_terminal_state_change_nothing():
    loss, terms = _loss()
    padded_loss, padded = _loss(pad=True)
    assert padded_loss.item() == pytest.approx(loss.item())
    assert all(padded[k].item() == pytest.approx(terms[k].item()) for k in terms)


def test_gradients_reach_q_and_v_but_not_through_the_targets():
    q = torch.tensor([Q0], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([T0], dtype=torch.float64, requires_grad=True)
    vs = torch.tensor([[0.5, 0.2, 0.0]], dtype=torch.float64, requires_grad=True)
    loss, _ = ilql_loss(
        torch.tensor([LOGITS], dtype=torch.float64),
        [q],
        [target],
        vs,
        torch.tensor([ACTIONS]),
        torch.tensor([[0.0, 1.0]], dtype=torch.float64),
        torch.tensor([[1, 1, 0]]),
        gamma=0.9,
        tau=0.7,
        cql_scale=0.1,
        awac_scale=1.0,
        beta=0.0,
    )
    loss.backward()
    assert q.grad.abs().sum() > 0 and vs.grad[0, :2].abs().sum() > 0
    assert target.grad is None or target.grad.abs().sum() == 0  # targets move only by Polyak


def test_reward_sits_on_the_last_action_and_scores_are_normalised():
    rewards = last_action_rewards(torch.tensor([1.0, -1.0]), torch.tensor([3, 1]), 4)
    assert rewards.tolist() == [[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]
    assert score_statistics(torch.tensor([1.0, 2.0, 3.0])) == pytest.approx((2.0, 1.0))
    assert score_statistics(torch.tensor([2.0, 2.0])) == (2.0, 1.0)  # equal scores: centred only
    assert score_statistics(torch.tensor([4.0])) == (4.0, 1.0)


def test_polyak_moves_targets_by_alpha():
    target, source = torch.tensor([1.0, 3.0]), torch.tensor([5.0, 3.0])
    polyak_update([target], [source], alpha=0.25)
    assert target.tolist() == [2.0, 3.0]  # 0.25·5 + 0.75·1
    polyak_update([target], [source], alpha=1.0)
    assert target.tolist() == [5.0, 3.0]


def test_decoding_at_beta_0_is_the_policy_and_beta_moves_mass_to_high_q():
    logits = torch.tensor([[1.0, 0.0, 0.5]])
    qs = [torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])]
    v = torch.tensor([0.5])
    plain = ilql_logprobs(logits, qs, v, beta=0.0)
    assert torch.allclose(plain, logits.log_softmax(-1))
    shifted = ilql_logprobs(logits, qs, v, beta=1.0)
    # token 1: log π + β·(min(2, 3) − 0.5); the others + β·(0 − 0.5): token 1 gains e^2.
    expected = logits.log_softmax(-1) + torch.tensor([[-0.5, 1.5, -0.5]])
    assert torch.allclose(shifted, expected.log_softmax(-1))
    assert shifted[0, 1] > plain[0, 1]
    top1 = ilql_logprobs(logits, qs, v, beta=1.0, top_k=1)
    assert top1.exp().tolist() == [[0.0, 1.0, 0.0]]
