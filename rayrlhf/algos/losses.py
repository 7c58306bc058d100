"""Policy and value losses and log-prob / entropy helpers for causal LM logits."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rayrlhf.algos.aggregation import aggregate
from rayrlhf.algos.masking import masked_mean


class PolicyLossOutput(NamedTuple):
    """Scalar outputs of :func:`policy_loss`; only ``loss`` carries gradients."""

    loss: Tensor
    clip_fraction: Tensor
    approx_kl: Tensor


class ValueLossOutput(NamedTuple):
    """Scalar outputs of :func:`value_loss`; only ``loss`` carries gradients."""

    loss: Tensor
    clip_fraction: Tensor


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of each label token.

    Args:
        logits: (B, T, V) unnormalised scores (any float dtype).
        labels: (B, T) token ids, already aligned with ``logits`` positions.

    Returns:
        (B, T) float32 log-probs.
    """
    # float32: bf16 log_softmax over a large vocab loses too much precision for
    # the exp(logp - old_logp) ratios PPO relies on.
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at each position.

    Args:
        logits: (B, T, V) unnormalised scores.

    Returns:
        (B, T) float32 entropy in nats.
    """
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=-1)
    # H = -sum p log p; softmax(x) = exp(log_softmax(x)) avoids a second normalisation.
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    clip_range: float,
    clip_high: float | None = None,
    agg: str = "token_mean",
    constant: float = 1.0,
    behaviour_weights: Tensor | None = None,
) -> PolicyLossOutput:
    """PPO clipped surrogate objective (as a loss to minimise), for every online algorithm.

    Args:
        logprobs: (B, T) log-probs under the current policy (with grad).
        old_logprobs: (B, T) log-probs under the rollout policy.
        advantages: (B, T) advantage estimates.
        response_mask: (B, T) bool or 0/1 mask of response tokens.
        clip_range: ε (ε_low); ratios are clipped to [1 - ε_low, 1 + ε_high].
        clip_high: DAPO's ε_high ("clip-higher"); None means symmetric, ε_high = ε_low.
        agg: how token losses become one number, a key of
            :data:`rayrlhf.algos.aggregation.LOSS_AGGREGATIONS` (token_mean: PPO and DAPO,
            seq_mean: GRPO, constant: Dr. GRPO).
        constant: Dr. GRPO's normaliser (``agg="constant"`` only).
        behaviour_weights: (B, T) decoupled PPO's truncated π_prox / π_behaviour per token
            (:mod:`rayrlhf.algos.off_policy`), for stale samples; None: all ones.

    Returns:
        PolicyLossOutput of scalars: the aggregated ``loss``; ``clip_fraction`` (share of tokens
        where clipping was active) and ``approx_kl`` = mean 0.5 * (logp - old)^2, both detached
        token means.
    """
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    high = clip_range if clip_high is None else clip_high
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + high)
    # Pessimistic bound: take the larger loss, so moving the ratio past the clip
    # range in the direction the advantage favours earns nothing.
    pg = torch.maximum(unclipped, clipped)
    if behaviour_weights is not None:
        pg = pg * behaviour_weights.detach()
    loss = aggregate(pg, response_mask, agg, constant)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), response_mask)
        approx_kl = masked_mean(0.5 * log_ratio**2, response_mask)
    return PolicyLossOutput(loss=loss, clip_fraction=clip_fraction, approx_kl=approx_kl)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    response_mask: Tensor,
    clip_range: float,
) -> ValueLossOutput:
    """PPO2-style clipped value loss.

    Args:
        values: (B, T) current critic predictions (with grad).
        old_values: (B, T) critic predictions at rollout time.
        returns: (B, T) value targets.
        response_mask: (B, T) bool or 0/1 mask of response tokens.
        clip_range: max change of the prediction relative to ``old_values``.

    Returns:
        ValueLossOutput of scalars: ``loss`` = 0.5 * masked mean of the larger
        squared error, and ``clip_fraction`` (share where the clipped error won).
    """
    old_values = old_values.detach()
    returns = returns.detach()
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err_unclipped = (values - returns) ** 2
    err_clipped = (v_clipped - returns) ** 2
    # Max (not min) keeps the critic from benefiting from a large update it
    # would not be allowed to take, mirroring the policy clip.
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), response_mask)
    with torch.no_grad():
        clip_fraction = masked_mean((err_clipped > err_unclipped).float(), response_mask)
    return ValueLossOutput(loss=loss, clip_fraction=clip_fraction)


def sft_nll_sum(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL over the loss-masked (response) tokens, and how many there are.

    Args:
        logits: (B, T, V) causal LM logits; position t predicts token t+1.
        input_ids: (B, T) the sequence.
        loss_mask: (B, T) bool, True at tokens that count (response tokens); prompt tokens and
            padding are False, so they can never contribute to the loss or its gradient.

    Returns:
        (sum of -log p over masked tokens, number of masked tokens) as 0-dim tensors. The caller
        divides by the global token count, so the loss is a token mean over the whole minibatch.
    """
    target_mask = loss_mask[:, 1:]
    nll = -logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])
    return (nll * target_mask).sum(), target_mask.sum()
