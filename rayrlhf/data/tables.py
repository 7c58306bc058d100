"""Tables of training rows: JSONL, CSV, Parquet, a saved HF dataset, or an Argilla export.

Every format is read into the same thing: ``(row number, record, parse problem)`` triples in file
order (:func:`read_records`, from :mod:`rayrlhf.data.readers`), then mapped onto our column
names and validated per row kind (:func:`load_rows`). A bad row is skipped and counted with the
row number a user would look up (JSONL: line number; CSV: line number, header = line 1;
Parquet/HF: 1-based index), so a run on a slightly dirty file goes on and says what it dropped,
while a mostly broken file fails early with the first reasons.

Row kinds and their columns (:data:`ROW_KINDS`); every clean row also carries ``"row"``:

- ``prompts``: ``prompt``
- ``sft``: ``prompt``, ``response``
- ``pairwise``: ``prompt``, ``chosen``, ``rejected``, optional ``tie`` (yes/no, default no)
- ``scalar``: ``prompt``, ``response``, ``score`` (a finite number)
- ``binary``: ``prompt``, ``response``, ``accepted`` (yes/no)

Everything here is offline; ``pyarrow`` and ``datasets`` are imported only when a Parquet file or
a saved dataset is read, so JSONL/CSV users do not pay their import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayrlhf.config import TableConfig
from rayrlhf.data.argilla import ArgillaRows, convert_records
from rayrlhf.data.readers import DataError, Record, open_table, read_records
from rayrlhf.data.rows import (
    LoadReport,
    parse_answer,
    parse_flag,
    parse_score,
    parse_text,
    write_jsonl,
)

__all__ = [
    "DataError",
    "LoadReport",
    "Record",
    "ROW_KINDS",
    "load_rows",
    "read_records",
    "write_jsonl",
]

ROW_KINDS: dict[str, tuple[str, ...]] = {
    "prompts": ("prompt",),
    "verified_prompts": ("prompt", "answer"),  # with a reference answer (data.answer_key)
    "sft": ("prompt", "response"),
    "pairwise": ("prompt", "chosen", "rejected"),  # optional column "tie" (bool-ish, default False)
    "scalar": ("prompt", "response", "score"),
    "binary": ("prompt", "response", "accepted"),
}

# Columns a kind may have but need not; absent means the default.
_OPTIONAL: dict[str, tuple[str, ...]] = {"pairwise": ("tie",)}
_TEXT = frozenset({"prompt", "response", "chosen", "rejected"})


def load_rows(
    spec: TableConfig, kind: str, column_key: str | None = None
) -> tuple[list[dict], LoadReport]:
    """Read ``spec``, map its columns to ours, and keep the rows valid for ``kind``.

    Returns the clean rows (our column names, plus ``row``) and a :class:`LoadReport`. Raises
    :class:`DataError` when the file cannot be read, no row is usable, or more than
    ``spec.max_bad_fraction`` of the rows read are malformed.

    ``column_key``: the config key a user sets to name the file's column, for a table that is
    not a config table section (``data.prompt_key``); by default errors point at ``columns``.
    """
    if kind not in ROW_KINDS:
        raise ValueError(f"unknown row kind {kind!r}; expected one of {list(ROW_KINDS)}")
    if spec.format == "argilla":
        return _load_argilla(spec, kind)
    names = _column_names(spec, kind)
    opened = open_table(spec, kind)
    _check_header(spec, kind, names, opened.columns, column_key)
    rows: list[dict] = []
    report = LoadReport()
    for number, record, problem in opened.records:
        report.rows += 1
        row = None
        if problem is None:
            row, problem = parse_row(record, kind, names)
        if row is None:
            report.skip(number, problem or "malformed")
            continue
        row["row"] = number
        rows.append(row)
        report.kept += 1
        if spec.limit is not None and report.kept >= spec.limit:
            break
    check_report(spec.path, kind, report, len(rows), spec.max_bad_fraction)
    return rows, report


def read_argilla(spec: TableConfig) -> ArgillaRows:
    """An Argilla export's pairs and corrections, every record read."""
    return convert_records(open_table(spec, "Argilla export").records, columns=spec.columns)


def _load_argilla(spec: TableConfig, kind: str) -> tuple[list[dict], LoadReport]:
    if kind not in ("pairwise", "sft"):
        raise DataError(f"{spec.path}: an Argilla export gives pairwise or sft rows, not {kind}")
    converted = read_argilla(spec)
    rows = converted.pairs if kind == "pairwise" else converted.sft
    if spec.limit is not None:
        rows = rows[: spec.limit]
    check_report(spec.path, kind, converted.report, len(rows), spec.max_bad_fraction)
    return rows, converted.report


def _column_names(spec: TableConfig, kind: str) -> dict[str, str]:
    """Our column name → the file's, for every column ``kind`` may have."""
    known = ROW_KINDS[kind] + _OPTIONAL.get(kind, ())
    unknown = sorted(set(spec.columns) - set(known))
    if unknown:
        # A typo here would otherwise silently read the default column.
        raise DataError(
            f"{spec.path}: columns maps {unknown}, which {kind} rows do not have; "
            f"their columns are {list(known)}"
        )
    return {ours: spec.columns.get(ours, ours) for ours in known}


def _check_header(
    spec: TableConfig,
    kind: str,
    names: dict[str, str],
    columns: list[str] | None,
    column_key: str | None = None,
) -> None:
    """Fail once, naming the file's columns, rather than once per row for an absent column.

    The advice names a key the user can set: ``column_key`` where given, else the table
    section's ``columns`` mapping.
    """
    if not columns:
        return
    for ours in ROW_KINDS[kind]:
        theirs = names[ours]
        if theirs not in columns:
            hint = f" (our {ours!r})" if theirs != ours else ""
            fix = (
                f"set {column_key}: <file's column>"
                if column_key
                else f"map names with columns: {{{ours}: <file's column>}}"
            )
            raise DataError(
                f"{spec.path}: no column {theirs!r}{hint} for {kind} rows; the file has "
                f"{columns}; {fix}"
            )


def check_report(
    path: str | Path, kind: str, report: LoadReport, good: int, max_bad_fraction: float
) -> None:
    """Raise :class:`DataError` when ``good`` is zero or too many rows were malformed."""
    if good == 0:
        raise DataError(
            f"{path}: no usable {kind} row among {report.rows} rows read; "
            f"first: {report.reasons[:3]}"
        )
    if report.skipped > max_bad_fraction * report.rows:
        raise DataError(
            f"{path}: {report.skipped} of {report.rows} rows malformed, more than "
            f"max_bad_fraction={max_bad_fraction}; first: {report.reasons[:3]}"
        )


def parse_row(
    record: dict[str, Any] | None, kind: str, names: dict[str, str] | None = None
) -> tuple[dict | None, str | None]:
    """One record as a clean ``kind`` row (our names), or ``(None, reason)``.

    ``names`` maps our column names to the record's (default: the same names).
    """
    if record is None:
        return None, "no record"
    names = names or {}
    row: dict[str, Any] = {}
    for ours in ROW_KINDS[kind]:
        theirs = names.get(ours, ours)
        if theirs not in record:
            why = f"no string field {theirs!r}" if ours in _TEXT else f"missing column {theirs!r}"
            return None, why
        value, why = _PARSERS.get(ours, parse_text)(ours, theirs, record[theirs])
        if why is not None:
            return None, why
        row[ours] = value
    if kind == "pairwise":
        theirs = names.get("tie", "tie")
        raw = record.get(theirs)
        tie, why = (False, None) if raw is None or raw == "" else parse_flag("tie", theirs, raw)
        if why is not None:
            return None, why
        if not tie and row["chosen"] == row["rejected"]:
            return None, "chosen and rejected are identical"
        row["tie"] = tie
    return row, None


_PARSERS = {"score": parse_score, "accepted": parse_flag, "answer": parse_answer}
