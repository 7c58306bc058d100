"""Verifiable rewards: check a response's final answer against the row's reference answer.

Reward functions here take a third argument, ``rows``: one dict per sample holding at least
``answer`` (the prompt table's ``data.answer_key`` column, or a reasoning-gym entry's answer).
They return named components, ``{"correct": [...], "format": [...]}``: the reward is their sum
weighted by ``reward.component_weights`` (1 each by default), and each is logged on its own
(``reward/correct``, ``reward/format``).

- :func:`math_answer` — math-verify: the answer in the last ``\\boxed{...}`` (else the last
  number) parsed as LaTeX or plain math and compared by numeric and symbolic equivalence
  (``1/2`` = ``0.5`` = ``\\frac{2}{4}``).
- :func:`numeric_answer` — the final number, equal within a relative 1e-6.
- :func:`exact_answer` — the final answer string, case and spaces folded.
- :func:`reasoning_gym_answer` — a reasoning-gym task's own scorer (rows from
  ``data.reasoning_gym``), on the final answer.

``format`` is 1 when the response gives its answer in the asked form (a ``\\boxed{}`` for math,
an ``Answer: X`` line otherwise), 0 when it had to be guessed from the last number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is)?\s*[:=]?\s*(.+)", re.IGNORECASE)


def boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip()
    return None  # never closed: no answer given in the asked form


def final_answer(text: str) -> tuple[str | None, bool]:
    """The response's final answer and whether it was in an asked form.

    ``\\boxed{X}`` (the last one) or an ``Answer: X`` line (the last one) are the asked forms;
    failing both, the last number in the text is taken, with ``False``.
    """
    box = boxed(text)
    if box is not None:
        return box, True
    lines = [m.group(1).strip() for m in ANSWER_LINE.finditer(text)]
    if lines and lines[-1]:
        return lines[-1].rstrip(". "), True
    numbers = NUMBER.findall(text)
    return (numbers[-1] if numbers else None), False


def as_number(text: str | None) -> float | None:
    """``text`` as a float when it is one number (thousands commas and a trailing period
    allowed), else None."""
    if text is None:
        return None
    found = NUMBER.fullmatch(text.strip().rstrip(".").replace(" ", ""))
    if not found:
        return None
    try:
        return float(found.group(0).replace(",", ""))
    except ValueError:
        return None


def numbers_equal(a: float | None, b: float | None, rel_tol: float = 1e-6) -> bool:
    """Equal within ``rel_tol`` (an absolute 1e-9 near zero); None equals nothing."""
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


def math_equal(answer: str | None, reference: str) -> bool:
    """math-verify's equivalence of ``answer`` to ``reference`` (LaTeX or plain), with a plain
    numeric comparison first (fast, and safe where parsing fails)."""
    if answer is None:
        return False
    if numbers_equal(as_number(answer), as_number(reference)):
        return True
    from math_verify import parse, verify  # the only importer of math-verify

    def wrap(x: str) -> str:
        return x if "$" in x or "\\boxed" in x else f"${x}$"

    try:
        gold, pred = parse(wrap(reference)), parse(wrap(answer))
        return bool(gold) and bool(pred) and bool(verify(gold, pred))
    except Exception:  # noqa: BLE001 - a malformed answer is a wrong one, never a crash
        return False


def _references(rows: Sequence[dict[str, Any]] | None, n: int, name: str) -> list[str]:
    if rows is None or len(rows) != n or any("answer" not in r for r in rows):
        raise ValueError(
            f"reward function {name} needs each prompt's reference answer: set data.answer_key "
            "(the prompts column holding it) or data.reasoning_gym"
        )
    return [str(r["answer"]) for r in rows]


def _verify(
    responses: list[str],
    rows: Sequence[dict[str, Any]] | None,
    name: str,
    check: Callable[[str | None, str], float],
) -> dict[str, list[float]]:
    """``correct``: ``check(final answer, reference)`` per response; ``format``: whether the
    answer was given in an asked form."""
    refs = _references(rows, len(responses), name)
    found = [final_answer(r) for r in responses]
    return {
        "correct": [float(check(a, ref)) for (a, _), ref in zip(found, refs, strict=True)],
        "format": [float(f) for _, f in found],
    }


def math_answer(
    prompts: list[str], responses: list[str], rows: Sequence[dict[str, Any]] | None = None
) -> dict[str, list[float]]:
    """``correct``: the final answer is mathematically equal to the reference (math-verify)."""
    return _verify(responses, rows, "math_answer", math_equal)


def numeric_answer(
    prompts: list[str], responses: list[str], rows: Sequence[dict[str, Any]] | None = None
) -> dict[str, list[float]]:
    """``correct``: the final answer is the reference's number (relative 1e-6)."""
    return _verify(
        responses,
        rows,
        "numeric_answer",
        lambda a, ref: numbers_equal(as_number(a), as_number(ref)),
    )


def _fold(text: str | None) -> str:
    return " ".join((text or "").lower().split()).rstrip(".")


def exact_answer(
    prompts: list[str], responses: list[str], rows: Sequence[dict[str, Any]] | None = None
) -> dict[str, list[float]]:
    """``correct``: the final answer equals the reference, case and spacing folded."""
    return _verify(
        responses, rows, "exact_answer", lambda a, ref: bool(a) and _fold(a) == _fold(ref)
    )


@cache
def _scorer(task: str) -> Any:
    """A reasoning-gym dataset object of ``task``, for its ``score_answer`` (it reads only the
    entry it is given)."""
    import reasoning_gym  # the only importer besides rayrlhf.data.reasoning_tasks

    return reasoning_gym.create_dataset(task, size=1, seed=0)


def reasoning_gym_answer(
    prompts: list[str], responses: list[str], rows: Sequence[dict[str, Any]] | None = None
) -> dict[str, list[float]]:
    """``correct``: the task's own scorer on the final answer (its score in [0, 1]; some tasks
    give partial credit); rows from ``data.reasoning_gym``, each with its ``task`` and
    ``entry``."""
    if rows is not None and any("task" not in r or "entry" not in r for r in rows):
        raise ValueError("reasoning_gym_answer scores rows of data.reasoning_gym only")
    entries = iter(rows or [])

    def check(answer: str | None, _reference: str) -> float:
        row = next(entries)
        return (
            float(_scorer(row["task"]).score_answer(answer, row["entry"]) or 0.0) if answer else 0.0
        )

    return _verify(responses, rows, "reasoning_gym_answer", check)
