"""Training on samples a few policy versions old (``rollout.max_staleness`` > 0).

AReaL's decoupled PPO objective (Fu et al., 2025) separates the two policies that synchronous PPO
conflates: the *behaviour* policy π_b that generated a sample (version ``t - s`` for staleness
s, its log-probs recorded by the rollout worker) and the *proximal* policy π_prox the update is
kept close to (the learner's weights when the step starts: the "old" log-probs of its first
forward pass). The per-token loss is::

    w · max(-A · r, -A · clip(r, 1 - ε_low, 1 + ε_high)),   r = π_θ / π_prox,
    w = min(π_prox / π_b, cap)   (detached)

so the trust region stays around the current policy while ``w`` corrects the expectation for the
samples having come from π_b. Truncating ``w`` at ``cap`` (truncated importance sampling) bounds
the variance a very unlikely token would add. With staleness 0, π_prox = π_b up to the engine's
numerics and w ≈ 1: the objective is PPO's.
"""

from __future__ import annotations

import torch
from torch import Tensor


def behaviour_weights(
    proximal_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor, cap: float
) -> Tensor:
    """Truncated importance weights π_prox / π_b per token.

    Args:
        proximal_logprobs: (B, T) log-probs under the learner's weights at the step's start.
        behaviour_logprobs: (B, T) log-probs the rollout recorded (the generating version).
        mask: (B, T) 0/1 response mask.
        cap: the truncation, > 1.

    Returns:
        (B, T) detached weights in (0, cap], 0 off the mask.
    """
    log_w = (proximal_logprobs - behaviour_logprobs).detach()
    # Clamped in log space first: exp of a large gap must not overflow before the cap applies.
    w = torch.exp(torch.clamp(log_w, max=torch.log(torch.tensor(cap)).item()))
    return w * mask


def staleness_counts(versions: Tensor, current: int, max_staleness: int) -> list[int]:
    """Samples per staleness 0..max_staleness, for the histogram metrics.

    Args:
        versions: (B,) long, the policy version each sample was generated with.
        current: the learner's version (the one this step trains from).
        max_staleness: the largest staleness accepted.

    Raises:
        ValueError: a sample is older than ``max_staleness`` or newer than ``current``.
    """
    age = current - versions
    if (age < 0).any() or (age > max_staleness).any():
        raise ValueError(
            f"samples of an old policy version (or one the learner never had): versions "
            f"{versions.unique().tolist()} at learner version {current}; accepted are "
            f"{current - max_staleness}..{current} (rollout.max_staleness={max_staleness})"
        )
    return torch.bincount(age.long(), minlength=max_staleness + 1).tolist()
