"""Shared by the math tests: a tolerance check, and the policy-loss case worked out by hand."""

from __future__ import annotations

import torch


def close(actual: torch.Tensor, expected: list | float, atol: float = 1e-5) -> None:
    """``actual`` equals the hand-computed ``expected`` to ``atol`` (no relative slack)."""
    torch.testing.assert_close(
        actual.double(), torch.tensor(expected, dtype=torch.float64), atol=atol, rtol=0
    )


def policy_case() -> tuple[torch.Tensor, ...]:
    """(logp with grad, old, advantages, mask) of five tokens and one pad, by (ratio, A):
    (1.5,+1) (0.5,+1) (1.5,-1) | (0.5,-1) (1.1,+2) pad(3.0,+10)."""
    ratio = torch.tensor([[1.5, 0.5, 1.5], [0.5, 1.1, 3.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -2.5]])
    logp = (old + torch.log(ratio)).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0], [-1.0, 2.0, 10.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, old, adv, mask
