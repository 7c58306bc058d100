"""Masked reductions used throughout the RLHF math.

Every tensor in the trainer is right-padded, so statistics must only look at
positions where ``mask`` is set. Masks may be bool or 0/1 of any dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` over positions where ``mask`` is set.

    Args:
        x: Any shape, e.g. (B, T).
        mask: Same shape as ``x``; bool or 0/1.
        dim: Dimension to reduce; ``None`` reduces everything to a scalar.

    Returns:
        Scalar if ``dim`` is None, else ``x`` with ``dim`` removed.
    """
    # where() instead of x * mask: padding may hold inf/NaN (e.g. -inf log-probs)
    # and NaN * 0 is NaN. Keeping the shape (vs. boolean indexing) lets dim work.
    masked = torch.where(mask.bool(), x, torch.zeros_like(x))
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is set.

    Args:
        x: Any shape, e.g. (B, T).
        mask: Same shape as ``x``; bool or 0/1.
        dim: Dimension to reduce; ``None`` reduces everything to a scalar.

    Returns:
        Scalar if ``dim`` is None, else ``x`` with ``dim`` removed. Slices with
        an empty mask give 0 instead of NaN (count is clamped to >= 1).
    """
    m = mask.to(x.dtype)
    count = m.sum() if dim is None else m.sum(dim=dim)
    return masked_sum(x, m, dim) / count.clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over all masked positions (scalar).

    Args:
        x: Any shape, e.g. (B, T).
        mask: Same shape as ``x``; bool or 0/1.
        unbiased: Apply Bessel's correction (divide by ``n - 1``).

    Returns:
        Scalar tensor. With fewer than two elements and ``unbiased`` set the
        denominator is clamped to 1 rather than dividing by zero.
    """
    m = mask.to(x.dtype)
    mean = masked_mean(x, m)
    sq_dev = masked_sum((x - mean) ** 2, m)
    count = m.sum()
    denom = count - 1 if unbiased else count
    return sq_dev / denom.clamp(min=1)


def masked_whiten(
    x: Tensor,
    mask: Tensor,
    shift_mean: bool = True,
    mean: Tensor | float | None = None,
    var: Tensor | float | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """Normalise ``x`` to zero mean / unit variance over masked positions.

    Args:
        x: Any shape, e.g. advantages (B, T).
        mask: Same shape as ``x``; bool or 0/1.
        shift_mean: If False, the mean is added back, so only the scale changes.
        mean: Precomputed mean (e.g. all-reduced across data-parallel ranks).
            Computed locally with :func:`masked_mean` when None.
        var: Precomputed variance, same idea; local :func:`masked_var` when None.
        eps: Added to the variance before the rsqrt for numerical stability.

    Returns:
        Tensor shaped like ``x``; exactly 0 where ``mask`` is not set, so padded
        positions never leak into later losses.
    """
    m = mask.to(x.dtype)
    if mean is None:
        mean = masked_mean(x, m)
    if var is None:
        var = masked_var(x, m)
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m.bool(), whitened, torch.zeros_like(whitened))
