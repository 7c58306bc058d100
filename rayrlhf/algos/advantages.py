"""Advantage estimators operating on right-padded (B, T) response tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


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
            response ends.
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
        next_value, next_adv, next_mask = values[:, t], adv_t, mask[:, t]

    advantages = advantages * mask
    returns = (advantages + values) * mask
    return AdvantageOutput(advantages=advantages, returns=returns)


ADVANTAGE_ESTIMATORS: dict[str, Callable[..., AdvantageOutput]] = {"gae": gae}
