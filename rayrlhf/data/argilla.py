"""Argilla ranking exports → pairwise rows for the reward model, and corrections → SFT rows.

The annotation setup (Argilla's "collecting comparison data" guide, plus a tie value and a
correction box): text fields ``prompt``, ``response-1``, ``response-2``; a rating question
``response_ranking`` with 1 = the first response is better, 2 = the second is better,
3 = they are equally good; an optional text ``correct_response`` (a question the annotator fills
in, or a plain field). ``columns`` can rename any of these five.

Record shapes read (each a dict, from JSONL / a JSON array / Parquet / CSV / a saved dataset):

- flat: ``{"prompt": ..., "response-1": ..., "response-2": ..., "response_ranking": 1}``;
- Argilla 1.x ``FeedbackDataset.format_as("datasets")`` / ``push_to_huggingface``: each question
  column holds ``[{"user_id", "value", "status"}, ...]``, or, read back through ``datasets``
  (a ``Sequence`` of structs), ``{"user_id": [...], "value": [...], "status": [...]}``;
  ``<question>-suggestion`` columns are ignored;
- Argilla 1.x ``FeedbackRecord`` dicts / server API records: ``{"fields": {...}, "responses":
  [{"values": {"response_ranking": {"value": 1}}, "status": "submitted", "user_id": ...}]}``;
- Argilla 2.x ``dataset.records.to_list(flatten=True)`` / ``to_datasets()``: fields at the top,
  ``response_ranking.responses`` (values), ``.responses.users``, ``.responses.status``;
- Argilla 2.x ``to_list()`` / ``to_json()`` (nested): ``{"fields": {...}, "responses":
  {"response_ranking": [{"value": 1, "user_id": ..., "status": ...}]}}``.

Only human responses count, and of those only submitted ones when a status is given (draft and
discarded are ignored); suggestions (model pre-annotations) never count. Several annotators: the
value given most often wins; with no single most-given value (e.g. one says 1 and one says 2)
the record is a tie, since the annotators do not agree that either response is better.

A record is skipped and counted, with its row number, when it is not an object, lacks (or has an
empty) prompt / response-1 / response-2, has no submitted ranking, a ranking outside {1, 2, 3},
or identical responses ranked as different. A skipped record gives neither a pair nor an SFT row.

Ties: a tie is kept as a pair with ``tie=True`` (``chosen`` = response-1, ``rejected`` =
response-2). The reward-model loss treats it as a Bradley–Terry target probability of ½:
``loss = -½·log σ(r₁ − r₂) − ½·log σ(r₂ − r₁)``, which is smallest when r₁ = r₂, so it pulls the
two rewards together instead of pushing them apart; ties are left out of pairwise accuracy.

Corrections: a record whose submitted ``correct_response`` is non-empty gives the SFT row
``{"prompt", "response": correction}`` (several annotators: the most given text, else the first).

CLI: ``rayrlhf argilla EXPORT --out DIR`` writes ``DIR/pairs.jsonl`` and ``DIR/sft.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayrlhf.config import TableConfig
from rayrlhf.data.readers import DataError, Record, read_records
from rayrlhf.data.rows import LoadReport, parse_text, write_jsonl

FIELDS = ("prompt", "response-1", "response-2")
RANKING = "response_ranking"
CORRECTION = "correct_response"
NAMES = (*FIELDS, RANKING, CORRECTION)
FIRST, SECOND, TIE = 1, 2, 3


@dataclass
class ArgillaRows:
    """What an export converts to.

    ``report`` counts the export's records: ``kept`` = records that gave a pair, ``skipped`` =
    malformed records (with reasons).
    """

    pairs: list[dict] = field(default_factory=list)  # prompt, chosen, rejected, tie, row
    sft: list[dict] = field(default_factory=list)  # prompt, response, row
    report: LoadReport = field(default_factory=LoadReport)


def convert_records(
    records: Iterable[Record], columns: Mapping[str, str] | None = None
) -> ArgillaRows:
    """Convert ``(row, record, problem)`` triples (see :func:`readers.read_records`).

    ``columns`` maps our names (``prompt``, ``response-1``, ``response-2``,
    ``response_ranking``, ``correct_response``) to the export's.
    """
    names = _names(columns or {})
    out = ArgillaRows()
    for number, record, problem in records:
        out.report.rows += 1
        if problem is None:
            problem = _convert_one(number, record, names, out)
        if problem is None:
            out.report.kept += 1
        else:
            out.report.skip(number, problem)
    return out


def _names(columns: Mapping[str, str]) -> dict[str, str]:
    unknown = sorted(set(columns) - set(NAMES))
    if unknown:
        raise DataError(
            f"columns maps {unknown}, which an Argilla export does not have; "
            f"its names are {list(NAMES)}"
        )
    return {ours: columns.get(ours, ours) for ours in NAMES}


def _convert_one(
    number: int, record: dict[str, Any] | None, names: dict[str, str], out: ArgillaRows
) -> str | None:
    """Append the record's pair (and SFT row); return why it is malformed, or None."""
    if record is None:
        return "no record"
    texts: dict[str, str] = {}
    for ours in FIELDS:
        theirs = names[ours]
        text, why = parse_text(ours, theirs, _field(record, theirs))
        if why is not None:
            return why
        texts[ours] = text
    verdict, why = _verdict(record, names[RANKING])
    if why is not None:
        return why
    first, second = texts["response-1"], texts["response-2"]
    if verdict != TIE and first == second:
        return f"response-1 and response-2 are identical but ranked {verdict}"
    chosen, rejected = (second, first) if verdict == SECOND else (first, second)
    prompt = texts["prompt"]
    out.pairs.append(
        {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "tie": verdict == TIE,
            "row": number,
        }
    )
    correction = _correction(record, names[CORRECTION])
    if correction is not None:
        out.sft.append({"prompt": prompt, "response": correction, "row": number})
    return None


def _verdict(record: dict[str, Any], question: str) -> tuple[int, str | None]:
    """The annotators' joint ranking: 1, 2, or 3 (tie), or a reason the record is unusable."""
    ranks = []
    for value in submitted_values(record, question):
        rank = _rank(value)
        if rank is None:
            return TIE, f"{question} value {value!r} is not 1, 2 or 3"
        ranks.append(rank)
    if not ranks:
        return TIE, f"no submitted {question}"
    # No single most-given value: the annotators disagree, which is what a tie means.
    winner = majority(ranks)
    return (TIE if winner is None else winner), None


def _rank(value: Any) -> int | None:
    """1, 2 or 3 from an int, an integral float, or digit text (CSV); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        rank = int(value) if value.isdecimal() else None
    elif isinstance(value, (int, float)) and float(value).is_integer():
        rank = int(value)
    else:
        rank = None
    return rank if rank in (FIRST, SECOND, TIE) else None


def _correction(record: dict[str, Any], question: str) -> str | None:
    texts = [
        value
        for value in submitted_values(record, question)
        if isinstance(value, str) and value.strip()
    ]
    if not texts:
        return None
    return majority(texts) or texts[0]


def majority(values: list[Any]) -> Any | None:
    """The value given strictly more often than any other, or None when there is no such one."""
    counts = Counter(values).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


# ---------------------------------------------------------------------------------------------
# Record shapes
# ---------------------------------------------------------------------------------------------


def _is_nested(record: dict[str, Any]) -> bool:
    """Argilla's nested record dicts keep fields under ``"fields"``; exports flatten them."""
    return isinstance(record.get("fields"), dict)


def _field(record: dict[str, Any], name: str) -> Any:
    return (record["fields"] if _is_nested(record) else record).get(name)


def submitted_values(record: dict[str, Any], question: str) -> list[Any]:
    """The submitted answers to ``question`` in any supported shape (none: an empty list).

    A question stored as a plain value (a flat export, or a field) counts as one answer.
    """
    if _is_nested(record):
        pairs = _nested_answers(record, question)
    elif f"{question}.responses" in record:
        key = f"{question}.responses"  # Argilla 2.x flattened
        pairs = _zip_status(record[key], record.get(f"{key}.status"))
    else:
        pairs = _column_answers(record.get(question))
    return [value for value, status in pairs if value is not None and _is_submitted(status)]


def _nested_answers(record: dict[str, Any], question: str) -> list[tuple[Any, Any]]:
    responses = record.get("responses")
    if isinstance(responses, dict) and question in responses:
        return _column_answers(responses[question])  # 2.x: {question: [{"value", ...}]}
    if isinstance(responses, list):  # 1.x record / server API: one entry per annotator
        pairs = []
        for response in responses:
            values = response.get("values") if isinstance(response, dict) else None
            if isinstance(values, dict) and question in values:
                answer = values[question]
                value = answer.get("value") if isinstance(answer, dict) else answer
                pairs.append((value, response.get("status")))
        if pairs:
            return pairs
    return _column_answers(record["fields"].get(question))  # e.g. a correction kept as a field


def _column_answers(value: Any) -> list[tuple[Any, Any]]:
    """``(value, status)`` pairs from one column: scalar, list of dicts, or dict of lists."""
    if value is None:
        return []
    if isinstance(value, list):  # 1.x: [{"user_id", "value", "status"}]
        return [
            (item.get("value"), item.get("status")) if isinstance(item, dict) else (item, None)
            for item in value
        ]
    if isinstance(value, dict):
        if isinstance(value.get("value"), list):  # 1.x through datasets: dict of lists
            return _zip_status(value["value"], value.get("status"))
        return [(value.get("value"), value.get("status"))]
    return [(value, None)]


def _zip_status(values: Any, statuses: Any) -> list[tuple[Any, Any]]:
    if values is None:
        return []
    if not isinstance(values, list):
        values = [values]
    if not isinstance(statuses, list):
        statuses = []
    return [(value, statuses[i] if i < len(statuses) else None) for i, value in enumerate(values)]


def _is_submitted(status: Any) -> bool:
    """No status means the export kept only answers (count it); otherwise only "submitted"."""
    return status is None or (isinstance(status, str) and status.strip().lower() == "submitted")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rayrlhf argilla",
        description="Convert an Argilla ranking export to pairs.jsonl (reward model) and "
        "sft.jsonl (corrections).",
    )
    parser.add_argument("export", help="The export: JSONL/JSON, Parquet, CSV, or a saved dataset.")
    parser.add_argument("--out", required=True, help="Folder to write pairs.jsonl and sft.jsonl.")
    parser.add_argument(
        "--format",
        choices=("auto", "jsonl", "parquet", "hf", "csv"),
        default="auto",
        help="The export's file format (auto: from the name; a folder is a saved dataset).",
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="OURS=THEIRS",
        help=f"Rename a column, e.g. prompt=instruction (ours: {', '.join(NAMES)}).",
    )
    return parser.parse_args(argv)


def _columns(pairs: list[str]) -> dict[str, str]:
    columns = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours or not theirs:
            raise DataError(f"--column {pair!r}: expected OURS=THEIRS")
        columns[ours] = theirs
    return columns


def main(argv: list[str] | None = None) -> int:
    """``rayrlhf argilla EXPORT --out DIR``: write the pairs and SFT rows; 2 on a data error."""
    args = _parse_args(argv)
    try:
        columns = _columns(args.column)
        spec = TableConfig(path=args.export, format=args.format)
        converted = convert_records(read_records(spec), columns=columns)
        report = converted.report
        if not converted.pairs:
            raise DataError(
                f"{args.export}: no usable record among {report.rows}; first: {report.reasons[:3]}"
            )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "pairs.jsonl", converted.pairs)
        write_jsonl(out / "sft.jsonl", converted.sft)
    except (DataError, OSError) as err:
        print(f"rayrlhf argilla: error: {err}", file=sys.stderr)
        return 2
    ties = sum(pair["tie"] for pair in converted.pairs)
    print(f"{args.export}: {report.rows} records, {report.skipped} skipped")
    print(f"wrote {len(converted.pairs)} pairs ({ties} ties) to {out / 'pairs.jsonl'}")
    print(f"wrote {len(converted.sft)} SFT rows to {out / 'sft.jsonl'}")
    for reason in report.reasons[:5]:
        print(f"  skipped {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
