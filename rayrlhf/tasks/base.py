"""What a supervised task supplies to the learner rank: data, model, per-micro-batch sums.

A task turns rows into *items* (what a minibatch is made of) and computes, for a micro-batch of
items, a summed loss plus summed statistics. The learner divides by global counts, so every
number is a mean over the whole minibatch (or held-out set) whatever the rank count.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from torch import Tensor, nn

from rayrlhf.config import TableConfig
from rayrlhf.data.tables import DataError, LoadReport, load_rows


class Task(Protocol):
    """The SFT or reward-model specifics (see :mod:`rayrlhf.tasks.sft`, ``reward_model``)."""

    train: list[Any]
    heldout: list[Any]
    report: LoadReport

    def build_model(self) -> nn.Module:
        """The model to train (built inside ZeRO-3 partitioned loading when enabled)."""

    def weight(self, item: Any) -> float:
        """What ``item`` adds to the loss denominator (tokens for SFT, examples for RMs)."""

    def loss_sums(self, model: Any, items: list[Any]) -> tuple[Tensor, dict[str, float]]:
        """Summed loss (with gradients) and summed statistics of a micro-batch."""

    def means(self, sums: dict[str, float]) -> dict[str, float]:
        """Statistics summed over ranks → the reported metrics (``loss``, ``accuracy``, ...)."""

    def save_extras(self, path: str) -> None:
        """Write what the model folder needs besides weights (tokenizer)."""


def load_split(
    data: TableConfig, heldout: TableConfig | None, fraction: float, kind: str, seed: int
) -> tuple[list[dict], list[dict], LoadReport]:
    """Training and held-out rows: from ``heldout`` when given, else a seeded random fraction.

    The returned report counts the training table's rows (plus the held-out table's, if any).
    """
    rows, report = load_rows(data, kind)
    if heldout is not None:
        held, held_report = load_rows(heldout, kind)
        for name in ("rows", "kept", "skipped"):
            setattr(report, name, getattr(report, name) + getattr(held_report, name))
        return rows, held, report
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_held = int(len(rows) * fraction)
    held_idx = set(order[:n_held])
    train = [r for i, r in enumerate(rows) if i not in held_idx]
    held = [r for i, r in enumerate(rows) if i in held_idx]
    if not train:
        raise DataError(f"{data.path}: no training rows left after holding out {n_held}")
    return train, held, report
