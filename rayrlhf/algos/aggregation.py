"""How a per-token loss becomes one number: the loss aggregations the online algorithms use.

Each aggregation is a pair of pure functions over (B, T) tensors:

- ``total(x, mask, constant)``: the summed loss of the rows given, before the division;
- ``units(mask, constant)``: (B,) how much each row counts in the division.

The loss of a batch is ``total / units.sum()``. The learner splits one optimizer step's
minibatch over ranks and micro-batches; it divides every micro-batch's ``total`` by the *global*
sum of ``units``, so the update is the same whatever the split (see ``PolicyUpdate._epochs``).

- ``token_mean``: Σ tokens / number of tokens (PPO, DAPO's token-level loss, RLOO, REINFORCE++);
- ``seq_mean``: Σ rows (Σ row tokens / row length) / rows (GRPO's per-sequence mean);
- ``constant``: Σ tokens / (rows × C) (Dr. GRPO, C = the generation budget).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from rayrlhf.algos.masking import masked_sum


class Aggregation(NamedTuple):
    """A loss aggregation: the summed loss of some rows and each row's weight in the divisor."""

    total: Callable[[Tensor, Tensor, float], Tensor]
    units: Callable[[Tensor, float], Tensor]


def _token_total(x: Tensor, mask: Tensor, constant: float) -> Tensor:
    return masked_sum(x, mask)


def _token_units(mask: Tensor, constant: float) -> Tensor:
    return mask.to(torch.float64).sum(-1)


def _seq_total(x: Tensor, mask: Tensor, constant: float) -> Tensor:
    lengths = mask.to(x.dtype).sum(-1).clamp(min=1)
    return (masked_sum(x, mask, dim=-1) / lengths).sum()


def _row_units(mask: Tensor, constant: float) -> Tensor:
    return torch.ones(mask.shape[0], dtype=torch.float64, device=mask.device)


def _constant_total(x: Tensor, mask: Tensor, constant: float) -> Tensor:
    # Dr. GRPO: a fixed normaliser, so a long response's tokens are not worth less than a
    # short one's (the length bias of the per-sequence mean).
    return masked_sum(x, mask) / constant


LOSS_AGGREGATIONS: dict[str, Aggregation] = {
    "token_mean": Aggregation(_token_total, _token_units),
    "seq_mean": Aggregation(_seq_total, _row_units),
    "constant": Aggregation(_constant_total, _row_units),
}


def aggregate(x: Tensor, mask: Tensor, name: str, constant: float = 1.0) -> Tensor:
    """The loss of this batch alone under aggregation ``name``.

    Args:
        x: (B, T) per-token losses.
        mask: (B, T) bool or 0/1 response mask.
        name: a key of :data:`LOSS_AGGREGATIONS`.
        constant: Dr. GRPO's normaliser C (``constant`` only).

    Returns:
        0-dim tensor ``total / units.sum()``; 0 for an empty batch.
    """
    agg = LOSS_AGGREGATIONS[name]
    units = agg.units(mask, constant).sum().clamp(min=1)
    return agg.total(x, mask, constant) / units.to(x.dtype)
