"""Correcting for the gap between the rollout engine's log-probs and the trainer's.

The rollout engine (vLLM, or HF generate in another precision or on another device) samples
from π_rollout, which is not exactly the trainer's π_train of the same weights: other kernels,
bf16 accumulation, a fused sampler. The policy gradient is an expectation under π_train, so each
token's loss is weighted by ρ_t = π_train(y_t) / π_rollout(y_t) (π_train: the learner's log-probs
at the step's start, the "old" ones of the clipped objective). Unbounded, ρ's variance is what
the correction is meant to tame, so each mode bounds it its own way
(``algorithm.rollout_correction``):

- ``tis`` — truncated importance sampling (slime, OpenRLHF, verl): w_t = min(ρ_t, C), C = 2 by
  default.
- ``seq_mask`` — TRL's default: the sequence's ratio ρ_seq = Π_t ρ_t = exp(Σ_t log ρ_t) weights
  every token of the sequence when ρ_seq ≤ C, and a sequence above C is dropped (w = 0); C = 3.
- ``icepop`` — IcePop (Ring-1T): w_t = ρ_t where α ≤ ρ_t ≤ β, else 0, a two-sided token mask;
  α = ``rollout_correction_low`` (0.5), β = C (5).

With asynchronous training (``rollout.max_staleness`` > 0) the decoupled objective already
weights each token by π_prox / π_behaviour truncated at ``behaviour_weight_cap``: the very ratio
ρ here (π_prox is π_train; π_behaviour is the engine's, of an older version). A correction then
takes that weight's place, never multiplies it (which would count the ratio twice); ``tis``
keeps the smaller of the two caps.

Metrics (:func:`correction_stats`): the mean weight, the fraction of tokens masked (seq_mask,
icepop) or truncated (tis), and the mismatch KL(π_rollout ‖ π_train) per token, estimated by
k3 = ρ − 1 − log ρ ≥ 0 on the rollout's own samples.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from rayrlhf.algos.masking import masked_mean

MODES = ("none", "tis", "seq_mask", "icepop")
DEFAULT_CAPS = {"tis": 2.0, "seq_mask": 3.0, "icepop": 5.0}
# exp() of a log-ratio is clamped here before anything else: one very unlikely token (or a
# long sequence's sum) must not overflow to inf and turn a 0 weight into NaN.
_MAX_LOG = 30.0


class Correction(NamedTuple):
    """A micro-batch's correction: (B, T) detached weights, 0 off the mask, and the (B, T) bool
    of tokens the mode masked out or truncated."""

    weights: Tensor
    affected: Tensor


def correction_weights(
    train_logprobs: Tensor,
    rollout_logprobs: Tensor,
    mask: Tensor,
    mode: str,
    cap: float,
    low: float = 0.5,
) -> Correction:
    """Per-token weights for the policy loss.

    Args:
        train_logprobs: (B, T) the trainer's log-probs of the sampled tokens (π_train, or
            π_prox in asynchronous training), at the step's start.
        rollout_logprobs: (B, T) the engine's log-probs of the same tokens (π_rollout).
        mask: (B, T) 0/1 response (loss) mask; whole rows, as seq_mask sums over each.
        mode: one of :data:`MODES` other than ``none``.
        cap: C (tis, seq_mask) or β (icepop), > 1.
        low: α of icepop, in (0, 1).

    Returns:
        :class:`Correction`; every weight is 0 off the mask.
    """
    m = mask.to(train_logprobs.dtype)
    log_ratio = ((train_logprobs - rollout_logprobs).detach() * m).clamp(-_MAX_LOG, _MAX_LOG)
    on = m > 0
    if mode == "tis":
        w = torch.exp(log_ratio.clamp(max=math.log(cap)))
        affected = (log_ratio > math.log(cap)) & on
    elif mode == "seq_mask":
        log_seq = log_ratio.sum(-1, keepdim=True).clamp(-_MAX_LOG, _MAX_LOG)  # (B, 1)
        keep = log_seq <= math.log(cap)
        w = torch.where(keep, torch.exp(log_seq), torch.zeros_like(log_seq)).expand_as(m)
        affected = ~keep & on
    elif mode == "icepop":
        keep = (log_ratio >= math.log(low)) & (log_ratio <= math.log(cap))
        w = torch.where(keep, torch.exp(log_ratio), torch.zeros_like(log_ratio))
        affected = ~keep & on
    else:
        raise ValueError(f"rollout correction {mode!r}: expected one of {MODES[1:]}")
    return Correction(weights=w * m, affected=affected)


def mismatch_kl(train_logprobs: Tensor, rollout_logprobs: Tensor) -> Tensor:
    """(B, T) k3 estimate of KL(π_rollout ‖ π_train) per token, from the rollout's samples:
    ρ − 1 − log ρ with ρ = π_train / π_rollout (≥ 0, 0 where the two agree)."""
    log_ratio = (train_logprobs - rollout_logprobs).detach().clamp(-_MAX_LOG, _MAX_LOG)
    return torch.expm1(log_ratio) - log_ratio


def correction_stats(
    correction: Correction, train_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor
) -> dict[str, float]:
    """A micro-batch's ``rollout_correction/*`` metrics (token means over the mask)."""
    return {
        "rollout_correction/weight_mean": masked_mean(correction.weights, mask).item(),
        "rollout_correction/affected_fraction": masked_mean(
            correction.affected.float(), mask
        ).item(),
        "rollout_correction/mismatch_kl": masked_mean(
            mismatch_kl(train_logprobs, rollout_logprobs), mask
        ).item(),
    }
