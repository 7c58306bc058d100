"""What a supervised task supplies to the learner rank: data, model, per-micro-batch sums.

A task turns rows into *items* (what a minibatch is made of) and computes, for a micro-batch of
items, a summed loss plus summed statistics. The learner divides by global counts, so every
number is a mean over the whole minibatch (or held-out set) whatever the rank count.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from torch import Tensor, nn

from rayrlhf.config import TableConfig
from rayrlhf.data.encode import SFTExample, encode_sft
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
    # Whole prompts go to one side: a prompt seen in training would flatter the held-out score.
    prompts = sorted({r["prompt"] for r in rows})
    random.Random(seed).shuffle(prompts)
    target, held_prompts, n_held = int(len(rows) * fraction), set(), 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["prompt"]] = counts.get(r["prompt"], 0) + 1
    for prompt in prompts:
        if n_held >= target:
            break
        if n_held + counts[prompt] < len(rows):  # never hold out every row
            held_prompts.add(prompt)
            n_held += counts[prompt]
    train = [r for r in rows if r["prompt"] not in held_prompts]
    held = [r for r in rows if r["prompt"] in held_prompts]
    if not train:
        raise DataError(f"{data.path}: no training rows left after holding out {n_held}")
    return train, held, report


@contextmanager
def naming_source(path: str) -> Iterator[None]:
    """Prefix a :class:`DataError` raised inside with the table it is about ("row 7" of what)."""
    try:
        yield
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


def encode_rows(
    tokenizer: Any, rows: list[dict], stage: Any, rollout: Any, report: LoadReport, source: str
) -> list[SFTExample]:
    """``(prompt, response)`` rows encoded as SFT encodes them: the prompt templated as PPO's
    rollout workers show it (``rollout.template``), the response and EOS, the ``stage``'s length
    rules; a row error names ``source``."""
    with naming_source(source):
        return encode_sft(
            tokenizer,
            rows,
            template=rollout.template,
            plain_template=rollout.plain_template,
            max_prompt_tokens=stage.max_prompt_tokens,
            max_tokens=stage.max_tokens,
            overlong_prompt=stage.overlong_prompt,
            report=report,
        )
