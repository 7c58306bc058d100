"""What one table row's cells become, and what a load tells of its rows.

Shared by :mod:`rayrlhf.data.tables` (every tabular format) and :mod:`rayrlhf.data.argilla`
(Argilla exports), which sits below tables: the cell parsers return ``(value, None)`` or
``(None, why)`` so the caller can skip and count a bad row; :class:`LoadReport` is that count;
:func:`write_jsonl` writes converted rows back out.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Spellings of a yes/no label (accept/reject exports, CSV text, JSON booleans as text).
_YES = frozenset({"true", "yes", "1", "accept", "accepted"})
_NO = frozenset({"false", "no", "0", "reject", "rejected"})


@dataclass
class LoadReport:
    """How many rows were read, kept, and skipped (with the first few reasons).

    ``filtered`` and ``truncated`` are bumped by later stages (tokenizing drops or shortens
    over-long rows) so one report tells the whole story of what reached training.
    """

    rows: int = 0
    kept: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)
    filtered: int = 0
    truncated: int = 0

    def skip(self, row: int, why: str) -> None:
        """Count a malformed row; keep its reason if it is among the first ten."""
        self.skipped += 1
        if len(self.reasons) < 10:
            self.reasons.append(f"row {row}: {why}")

    def metrics(self, prefix: str = "data") -> dict[str, float]:
        """The counts as scalar metrics named ``{prefix}/rows``, ``{prefix}/kept``, ..."""
        counts = {
            "rows": self.rows,
            "kept": self.kept,
            "skipped": self.skipped,
            "filtered": self.filtered,
            "truncated": self.truncated,
        }
        return {f"{prefix}/{name}": float(value) for name, value in counts.items()}


def parse_text(ours: str, theirs: str, value: Any) -> tuple[str | None, str | None]:
    """A text column: a string with something besides whitespace."""
    if value is None:
        return None, f"no string field {theirs!r}"
    if not isinstance(value, str):
        return None, f"field {theirs!r} is {type(value).__name__}, not a string"
    if not value.strip():
        return None, f"empty {ours}"
    return value, None


def parse_answer(ours: str, theirs: str, value: Any) -> tuple[str | None, str | None]:
    """A reference answer: text, or a number (JSON gives numbers), kept as its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (str(value), None) if math.isfinite(value) else (None, f"{ours} {value!r}")
    return parse_text(ours, theirs, value)


def parse_score(ours: str, theirs: str, value: Any) -> tuple[float | None, str | None]:
    """A finite number, given as a number or numeric text (CSV gives text)."""
    # bool is an int subclass, but True is not a score anyone meant.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None, f"{ours} {value!r} is not a number"
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None, f"{ours} {value!r} is not a number"
    if not math.isfinite(number):
        return None, f"{ours} {number} is not finite"
    return number, None


def parse_flag(ours: str, theirs: str, value: Any) -> tuple[bool | None, str | None]:
    """A yes/no label: a bool, 0/1, or true/false/yes/no/1/0/accept(ed)/reject(ed) text."""
    if isinstance(value, bool):
        return value, None
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value), None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _YES:
            return True, None
        if word in _NO:
            return False, None
    return None, f"{ours} {value!r} is not a yes/no label"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSON lines, then rename: a crash never leaves a half file that looks whole."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
