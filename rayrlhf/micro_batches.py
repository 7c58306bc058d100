"""How a learner rank cuts rows into micro-batches: by rows, or by a token budget.

Pure functions over row lengths. With a budget, the rows of a minibatch go into as few
micro-batches as keep each under the budget, balanced by tokens (longest rows first, each into
the lightest micro-batch), so a rank's forward passes are of even size whatever the lengths.
Every rank of a group must run the same number of micro-batches a minibatch (DeepSpeed reduces
gradients at each backward): :func:`split_rows` takes that count from the caller, who agrees on it
over the ranks. Which rows share a micro-batch never changes the update: each micro-batch's loss
is scaled by its share of the global minibatch's units.
"""

from __future__ import annotations

import math

import torch


def row_costs(attention_mask: torch.Tensor, packed: bool) -> torch.Tensor:
    """(B,) token slots each row takes in a forward: its real tokens packed, the width padded."""
    if packed:
        return attention_mask.sum(-1).long()
    return torch.full((attention_mask.shape[0],), attention_mask.shape[1], dtype=torch.long)


def micro_batch_count(costs: torch.Tensor, max_tokens: int) -> int:
    """The fewest micro-batches that keep each under ``max_tokens`` (a row above it alone).

    Longest-first into the lightest bin, adding bins until every bin with two or more rows
    fits: deterministic, and within one bin of the optimum for these sizes.
    """
    n = len(costs)
    count = max(1, math.ceil(int(costs.sum()) / max_tokens))
    while count < n:
        bins = _balanced(costs, count)
        if all(len(b) == 1 or int(costs[b].sum()) <= max_tokens for b in bins):
            return count
        count += 1
    return max(1, n)


def _balanced(costs: torch.Tensor, count: int) -> list[list[int]]:
    """Indices of ``costs`` in ``count`` bins balanced by total cost (longest first, each into
    the lightest bin; ties by position); each bin's indices ascending."""
    order = sorted(range(len(costs)), key=lambda i: (-int(costs[i]), i))
    bins: list[list[int]] = [[] for _ in range(count)]
    loads = [0] * count
    for i in order:
        j = min(range(count), key=lambda k: (loads[k], k))
        bins[j].append(i)
        loads[j] += int(costs[i])
    return [sorted(b) for b in bins]


def split_rows(rows: torch.Tensor, costs: torch.Tensor, count: int) -> list[torch.Tensor]:
    """``rows`` (indices into a batch) in ``count`` micro-batches balanced by ``costs[rows]``.

    ``count`` must be at most ``len(rows)``: every micro-batch gets at least one row.
    """
    if not 1 <= count <= len(rows):
        raise ValueError(f"cannot split {len(rows)} rows into {count} micro-batches")
    bins = _balanced(costs[rows], count)
    return [rows[torch.tensor(b, dtype=torch.long)] for b in bins]


def fixed_rows(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """``rows`` in consecutive micro-batches of ``size`` (the last may be smaller)."""
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def local_micro_batches(
    rows: torch.Tensor, costs: torch.Tensor, max_tokens: int, rows_each: int
) -> list[torch.Tensor]:
    """``rows`` cut for a pass that needs no agreement with other ranks (no gradients):
    ``rows_each`` at a time, or with a ``max_tokens`` budget as few as keep each under it."""
    if max_tokens == 0:
        return fixed_rows(rows, rows_each)
    return split_rows(rows, costs, micro_batch_count(costs[rows], max_tokens))
