"""Prompt source: a table of prompt rows, validated, dealt out in chunks with stable sample ids."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rayrlhf.config import DataConfig, TableConfig
from rayrlhf.data.readers import SUFFIXES
from rayrlhf.data.tables import DataError, LoadReport, load_rows
from rayrlhf.experience import PromptChunk

__all__ = [
    "DataError",
    "LoadReport",
    "PromptSource",
    "load_prompts",
    "prompt_extras",
    "prompt_table",
]


# The config keys behind load_prompts' arguments: its errors tell the user what to set.
PATH_KEY, COLUMN_KEY = "data.prompts", "data.prompt_key"


def load_prompts(
    path: str | Path, key: str, max_bad_fraction: float
) -> tuple[list[str], LoadReport]:
    """Read ``data.prompts`` (field ``key`` of each row). Malformed rows are skipped and counted.

    A ``.jsonl`` path is JSONL whatever else; other names go by their extension (see
    :mod:`rayrlhf.data.tables`). Fails when no prompt is usable or more than
    ``max_bad_fraction`` of rows are malformed.
    """
    _check_name(Path(path))
    spec = TableConfig(
        path=str(path),
        format="jsonl" if str(path).endswith(".jsonl") else "auto",
        columns={"prompt": key},
        max_bad_fraction=max_bad_fraction,
    )
    rows, report = load_rows(spec, "prompts", column_key=COLUMN_KEY)
    return [row["prompt"] for row in rows], report


def prompt_table(data: DataConfig) -> tuple[list[str], list[dict[str, Any]] | None, LoadReport]:
    """The run's prompts, their rows for verifying rewards (None when the prompts are text
    alone), and the load report: from ``data.prompts`` (with ``data.answer_key``, each row's
    reference answer too: rows without one are skipped and counted) or a reasoning-gym task."""
    if data.reasoning_gym is not None:
        from rayrlhf.data.reasoning_tasks import task_rows

        rows = task_rows(data.reasoning_gym)
        report = LoadReport(rows=len(rows), kept=len(rows))
        return [r["prompt"] for r in rows], [prompt_extras(r) for r in rows], report
    assert data.prompts is not None  # the config holds one of the two
    if data.answer_key is None:
        prompts, report = load_prompts(data.prompts, data.prompt_key, data.max_bad_fraction)
        return prompts, None, report
    _check_name(Path(data.prompts))
    spec = TableConfig(
        path=str(data.prompts),
        format="jsonl" if str(data.prompts).endswith(".jsonl") else "auto",
        columns={"prompt": data.prompt_key, "answer": data.answer_key},
        max_bad_fraction=data.max_bad_fraction,
    )
    rows, report = load_rows(spec, "verified_prompts", column_key="data.answer_key")
    return [r["prompt"] for r in rows], [prompt_extras(r) for r in rows], report


def prompt_extras(row: dict[str, Any]) -> dict[str, Any]:
    """What a prompt row carries beside its text (the file's line number stays behind)."""
    return {k: v for k, v in row.items() if k not in ("prompt", "row")}


def _check_name(path: Path) -> None:
    """``data.prompts`` is a bare path with no ``format`` key beside it (unlike a table
    section): its format comes from the name alone, so an unknown ending is refused here with
    advice a user can follow."""
    if path.is_file() and path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"{PATH_KEY}: cannot tell the table format of {path} from its name; name it "
            f"with one of {', '.join(SUFFIXES)}, or give a folder saved by datasets' "
            "save_to_disk"
        )


class PromptSource:
    """Deals prompts in a seeded shuffled order, epoch after epoch, as chunks per step.

    Sample ids are ``"{step}-{i}"``: stable for a given step, so a re-run chunk keeps its ids.
    """

    def __init__(
        self, prompts: list[str], seed: int, rows: list[dict[str, Any]] | None = None
    ) -> None:
        """``rows``: one dict per prompt (its reference answer, ...), dealt with it."""
        self.prompts = prompts
        self.rows = rows
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.prompts)))
            random.Random(self.seed * 7919 + epoch).shuffle(order)
            self._orders = {epoch: order}  # steps move forward: one epoch's order is enough
        return self._orders[epoch]

    def step_chunks(
        self,
        step: int,
        prompts_per_step: int,
        chunk_size: int,
        group_size: int = 1,
        cursor: int | None = None,
        first: int = 0,
    ) -> list[PromptChunk]:
        """The chunks of ``prompts_per_step`` prompts for ``step``: a pure function of its
        arguments, so resumes are exact.

        Prompts are taken from position ``cursor`` of the endless shuffled order (default
        ``step * prompts_per_step``); their ids count from ``first`` within the step (dynamic
        sampling fetches further prompts for a step under ids that follow the first ones). A
        prompt's G samples are ``"{step}-{i}.{j}"``; with G = 1 just ``"{step}-{i}"``.
        """
        n = len(self.prompts)
        start = step * prompts_per_step if cursor is None else cursor
        index = [self._order(k // n)[k % n] for k in range(start, start + prompts_per_step)]
        picked = [self.prompts[i] for i in index]
        rows = None if self.rows is None else [self.rows[i] for i in index]

        def ids(i: int) -> list[str]:
            return (
                [f"{step}-{i}"]
                if group_size == 1
                else [f"{step}-{i}.{j}" for j in range(group_size)]
            )

        return [
            PromptChunk(
                sample_ids=[
                    s
                    for i in range(c, min(c + chunk_size, prompts_per_step))
                    for s in ids(first + i)
                ],
                prompts=[p for p in picked[c : c + chunk_size] for _ in range(group_size)],
                group_size=group_size,
                rows=None
                if rows is None
                else [r for r in rows[c : c + chunk_size] for _ in range(group_size)],
            )
            for c in range(0, prompts_per_step, chunk_size)
        ]
