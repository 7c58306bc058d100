"""What every scorer's output must be: one finite real number per sample."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch


class RewardError(ValueError):
    """A scorer returned something that is not one finite number per sample."""


def validate_scores(raw: object, sample_ids: list[str], source: str) -> torch.Tensor:
    """Check that ``raw`` holds exactly one finite real number per sample; return (B,) float32.

    No broadcasting, no silent NaN: the error names the scorer and the first offending sample.
    """
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().cpu().reshape(-1).tolist() if raw.dim() <= 1 else raw
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence | torch.Tensor):
        raise RewardError(f"{source} returned {type(raw).__name__}, expected a list of floats")
    if isinstance(raw, torch.Tensor):
        raise RewardError(f"{source} returned a tensor of shape {tuple(raw.shape)}, expected (B,)")
    if len(raw) != len(sample_ids):
        raise RewardError(f"{source} returned {len(raw)} scores for {len(sample_ids)} samples")
    for value, sid in zip(raw, sample_ids, strict=True):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RewardError(f"{source} gave non-number {value!r} for sample {sid!r}")
        if not math.isfinite(value):
            raise RewardError(f"{source} gave non-finite score {value!r} for sample {sid!r}")
    return torch.tensor([float(v) for v in raw], dtype=torch.float32)
