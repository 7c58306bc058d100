"""Advantage estimators operating on right-padded (B, T) response tensors.

Four families, chosen by name from :data:`ADVANTAGE_ESTIMATORS` (all share one signature,
``(AdvantageInputs, AdvantageParams) -> AdvantageOutput``):

- ``gae``: Generalized Advantage Estimation with a critic (PPO);
- ``group``: GRPO's group-normalised outcome advantage (r - mean_g) / (std_g + eps), or with
  Dr. GRPO's ``std_normalize=False`` just r - mean_g;
- ``rloo``: REINFORCE Leave-One-Out, r_i - mean of the other samples of the prompt;
- ``reinforce_pp``: REINFORCE++, the discounted return of the per-token rewards (KL included),
  normalised afterwards over the global batch by the caller (it needs every rank's tokens).

A "group" is the samples of one prompt; ``group_index`` (B,) numbers them. The sequence reward
of the outcome estimators is the sum of a row's token rewards: the score, minus the KL penalty
when the KL sits in the reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from rayrlhf.algos.masking import masked_sum


class AdvantageOutput(NamedTuple):
    """Result of an advantage estimator; both fields are (B, T), zero on padding."""

    advantages: Tensor
    returns: Tensor


@torch.no_grad()
def gae(
    rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    gamma: float,
    gae_lambda: float,
) -> AdvantageOutput:
    """Generalized Advantage Estimation (Schulman et al. 2016).

    Args:
        rewards: (B, T) per-token rewards.
        values: (B, T) critic values V_t for each response token.
        response_mask: (B, T) bool or 0/1; 0 marks right padding after the
            response ends, and observation tokens between the turns of an episode.
        gamma: Discount factor.
        gae_lambda: GAE lambda (bias/variance trade-off).

    Returns:
        AdvantageOutput with ``advantages`` and ``returns = advantages + values``,
        both (B, T) and zero where ``response_mask`` is 0.
    """
    # Detach + float copies: the recursion must never build a graph or touch inputs.
    # Accumulate in at least float32 so bf16 inputs don't lose precision over T steps.
    dtype = torch.promote_types(torch.promote_types(rewards.dtype, values.dtype), torch.float32)
    mask = response_mask.to(dtype)
    valid = response_mask.bool()
    zero = torch.zeros((), dtype=dtype, device=rewards.device)
    # where() rather than multiply so garbage (even NaN) in padding cannot leak.
    rewards = torch.where(valid, rewards.detach().to(dtype), zero)
    values = torch.where(valid, values.detach().to(dtype), zero)
    _, seq_len = rewards.shape

    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    next_mask = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(seq_len)):
        # next_mask zeroes the bootstrap past the last valid token: the episode
        # ends there, so V_{T} = 0 and no advantage flows back from padding.
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        adv_t = delta + gamma * gae_lambda * next_mask * next_adv
        advantages[:, t] = adv_t
        # A masked position inside a response (an environment's observation tokens between two
        # turns) is no step of the policy: the recursion passes over it, so the turn's last
        # token bootstraps from the next turn's first. Right padding is masked too, and there
        # the carried values are still the zeros they started as.
        here = valid[:, t]
        next_value = torch.where(here, values[:, t], next_value)
        next_adv = torch.where(here, adv_t, next_adv)
        next_mask = torch.where(here, mask[:, t], next_mask)

    advantages = advantages * mask
    returns = (advantages + values) * mask
    return AdvantageOutput(advantages=advantages, returns=returns)


def group_ids(group_index: Tensor) -> tuple[Tensor, int]:
    """(B,) dense group numbers 0..G-1 in order of appearance, and G."""
    _, inverse = torch.unique_consecutive(group_index, return_inverse=True)
    return inverse, int(inverse.max().item()) + 1 if inverse.numel() else 0


def group_mean_std(rewards: Tensor, group_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group mean, unbiased std and size of sequence rewards.

    Args:
        rewards: (B,) one reward per sample.
        group_index: (B,) long; consecutive equal values form a group.

    Returns:
        (G,) means, (G,) stds (0 for a group of one) and (G,) sizes, in order of appearance.
    """
    ids, n_groups = group_ids(group_index)
    r = rewards.double()
    size = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ids, torch.ones_like(r))
    mean = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ids, r) / size
    sq_dev = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ids, (r - mean[ids]) ** 2)
    std = (sq_dev / (size - 1).clamp(min=1)).sqrt()
    return mean, std, size


@torch.no_grad()
def group_normalized(
    rewards: Tensor, group_index: Tensor, std_normalize: bool = True, eps: float = 1e-6
) -> Tensor:
    """GRPO's outcome advantage per sample: (r - group mean) / (group std + eps).

    Args:
        rewards: (B,) sequence rewards.
        group_index: (B,) long group numbers (the samples of one prompt share one).
        std_normalize: False is Dr. GRPO: no division by the std (its "difficulty bias").
        eps: Added to the std so an all-equal group gives 0, not NaN.

    Returns:
        (B,) advantages, in the dtype of ``rewards``.
    """
    mean, std, _ = group_mean_std(rewards, group_index)
    ids, _ = group_ids(group_index)
    adv = rewards.double() - mean[ids]
    if std_normalize:
        adv = adv / (std[ids] + eps)
    return adv.to(rewards.dtype)


@torch.no_grad()
def leave_one_out(rewards: Tensor, group_index: Tensor) -> Tensor:
    """RLOO's advantage per sample: r_i - mean of the other rewards of its group.

    Args:
        rewards: (B,) sequence rewards.
        group_index: (B,) long group numbers; every group needs at least two samples.

    Returns:
        (B,) advantages.

    Raises:
        ValueError: A group has a single sample (it has no "others").
    """
    mean, _, size = group_mean_std(rewards, group_index)
    if bool((size < 2).any()):
        raise ValueError("leave_one_out needs at least two samples per group")
    ids, _ = group_ids(group_index)
    total, n = (mean * size)[ids], size[ids]
    return (rewards.double() - (total - rewards.double()) / (n - 1)).to(rewards.dtype)


@torch.no_grad()
def discounted_returns(rewards: Tensor, response_mask: Tensor, gamma: float) -> Tensor:
    """Return-to-go G_t = sum over k >= t of gamma^(k-t) r_k, per response token.

    Args:
        rewards: (B, T) per-token rewards.
        response_mask: (B, T) right-padded response mask (0s between an episode's turns too).
        gamma: Discount per generated token.

    Returns:
        (B, T) returns, zero on padding.
    """
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    valid = response_mask.bool()
    r = torch.where(valid, rewards.to(dtype), torch.zeros((), dtype=dtype))
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        # Masked positions (padding, an episode's observation tokens) are no steps: not
        # discounted over.
        running = torch.where(valid[:, t], r[:, t] + gamma * running, running)
        out[:, t] = running
    return torch.where(valid, out, torch.zeros_like(out))


class AdvantageInputs(NamedTuple):
    """What an estimator may read (B rows, T response tokens)."""

    rewards: Tensor  # (B, T) per-token rewards: score on the last token, KL penalty if in reward
    response_mask: Tensor  # (B, T)
    group_index: Tensor  # (B,) long; consecutive equal values are the samples of one prompt
    values: Tensor | None = None  # (B, T) critic values; only ``gae`` reads (and needs) them


class AdvantageParams(NamedTuple):
    """Hyper-parameters of the estimators (each reads the ones it needs)."""

    gamma: float = 1.0
    gae_lambda: float = 0.95
    std_normalize: bool = True
    eps: float = 1e-6


def _gae(inp: AdvantageInputs, p: AdvantageParams) -> AdvantageOutput:
    if inp.values is None:
        raise ValueError("gae needs critic values")
    return gae(inp.rewards, inp.values, inp.response_mask, p.gamma, p.gae_lambda)


def _outcome(per_sample: Tensor, mask: Tensor) -> AdvantageOutput:
    """A (B,) advantage on every response token; no critic, so the returns are the advantages."""
    adv = per_sample.unsqueeze(-1).to(torch.float32) * mask.to(torch.float32)
    return AdvantageOutput(advantages=adv, returns=adv)


def _group(inp: AdvantageInputs, p: AdvantageParams) -> AdvantageOutput:
    seq = masked_sum(inp.rewards, inp.response_mask, dim=-1)
    return _outcome(
        group_normalized(seq, inp.group_index, p.std_normalize, p.eps), inp.response_mask
    )


def _rloo(inp: AdvantageInputs, p: AdvantageParams) -> AdvantageOutput:
    seq = masked_sum(inp.rewards, inp.response_mask, dim=-1)
    return _outcome(leave_one_out(seq, inp.group_index), inp.response_mask)


def _reinforce_pp(inp: AdvantageInputs, p: AdvantageParams) -> AdvantageOutput:
    returns = discounted_returns(inp.rewards, inp.response_mask, p.gamma)
    return AdvantageOutput(advantages=returns, returns=returns)


ADVANTAGE_ESTIMATORS: dict[str, Callable[[AdvantageInputs, AdvantageParams], AdvantageOutput]] = {
    "gae": _gae,
    "group": _group,
    "rloo": _rloo,
    "reinforce_pp": _reinforce_pp,
}
