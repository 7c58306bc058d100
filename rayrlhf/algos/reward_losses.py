"""Reward-model losses for the three kinds of human feedback, and their held-out measures.

All return one value per example; callers sum and divide by the global example count.

Ties (pairwise): the Bradley–Terry likelihood models P(a ≻ b) = σ(r_a − r_b). A tie is read as
"each is preferred half the time": the loss is the cross-entropy of σ(r_a − r_b) against the
target ½, −½·log σ(d) − ½·log σ(−d), whose minimum is at d = 0. It pulls tied rewards together
without inventing a winner. Ties have no right answer, so they are left out of accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pairwise_loss(chosen: Tensor, rejected: Tensor, tie: Tensor) -> Tensor:
    """(N,) Bradley–Terry loss of (N,) rewards; ``tie`` (N,) bool selects the target ½."""
    d = chosen.float() - rejected.float()
    target = torch.where(tie, 0.5, 1.0)
    return F.binary_cross_entropy_with_logits(d, target, reduction="none")


def pairwise_correct(chosen: Tensor, rejected: Tensor, tie: Tensor) -> tuple[Tensor, Tensor]:
    """Per pair: 1 where the chosen reward is higher (non-ties only), and 1 for each non-tie."""
    decided = (~tie).float()
    return (chosen > rejected).float() * decided, decided


def regression_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """(N,) squared error of (N,) predicted scores against (N,) targets."""
    return (predicted.float() - target.float()) ** 2


def binary_loss(logit: Tensor, accepted: Tensor) -> Tensor:
    """(N,) cross-entropy of (N,) accept log-odds against (N,) 0/1 labels."""
    return F.binary_cross_entropy_with_logits(logit.float(), accepted.float(), reduction="none")
