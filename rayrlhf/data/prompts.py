"""Prompt source: a JSONL file of rows, validated, dealt out in chunks with stable sample ids."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from rayrlhf.experience import PromptChunk


class DataError(ValueError):
    """The data cannot be used: missing file, or too many malformed rows."""


@dataclass
class LoadReport:
    """How many rows were read, kept, and skipped (with the first few reasons)."""

    rows: int = 0
    kept: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, row: int, why: str) -> None:
        """Count a malformed row; keep its reason if it is among the first ten."""
        self.skipped += 1
        if len(self.reasons) < 10:
            self.reasons.append(f"row {row}: {why}")


def load_prompts(
    path: str | Path, key: str, max_bad_fraction: float
) -> tuple[list[str], LoadReport]:
    """Read prompts from JSONL. Malformed rows are skipped and counted, with their row number.

    Fails when no prompt is usable or more than ``max_bad_fraction`` of rows are malformed.
    """
    report = LoadReport()
    prompts: list[str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DataError(f"cannot read prompts file {path}: {err.strerror}") from None
    for row, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.rows += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            report.skip(row, f"not JSON ({err.msg})")
            continue
        text = record.get(key) if isinstance(record, dict) else None
        if not isinstance(text, str):
            report.skip(row, f"no string field {key!r}")
        elif not text.strip():
            report.skip(row, "empty prompt")
        else:
            prompts.append(text)
            report.kept += 1
    if not prompts:
        raise DataError(f"{path}: no usable prompt in {report.rows} rows; {report.reasons[:3]}")
    if report.skipped > max_bad_fraction * report.rows:
        raise DataError(
            f"{path}: {report.skipped} of {report.rows} rows malformed, more than "
            f"data.max_bad_fraction={max_bad_fraction}; first: {report.reasons[:3]}"
        )
    return prompts, report


class PromptSource:
    """Deals prompts in a seeded shuffled order, epoch after epoch, as chunks per step.

    Sample ids are ``"{step}-{i}"``: stable for a given step, so a re-run chunk keeps its ids.
    """

    def __init__(self, prompts: list[str], seed: int) -> None:
        self.prompts = prompts
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.prompts)))
            random.Random(self.seed * 7919 + epoch).shuffle(order)
            self._orders = {epoch: order}  # steps move forward: one epoch's order is enough
        return self._orders[epoch]

    def step_chunks(self, step: int, prompts_per_step: int, chunk_size: int) -> list[PromptChunk]:
        """The chunks of prompts for ``step`` (a pure function of step, so resumes are exact)."""
        n = len(self.prompts)
        picked = []
        for k in range(step * prompts_per_step, (step + 1) * prompts_per_step):
            picked.append(self.prompts[self._order(k // n)[k % n]])
        return [
            PromptChunk(
                sample_ids=[f"{step}-{i}" for i in range(c, c + chunk_size)],
                prompts=picked[c : c + chunk_size],
            )
            for c in range(0, prompts_per_step, chunk_size)
        ]
