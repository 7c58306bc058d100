"""Tables: every format reads the same rows; column mapping; per-kind validation; thresholds."""

from __future__ import annotations

import csv
import json
import math

import pytest

from rayrlhf.config import TableConfig
from rayrlhf.data.tables import (
    ROW_KINDS,
    DataError,
    LoadReport,
    load_rows,
    read_records,
)

ROWS = [
    {"prompt": "Say hi", "response": "hi"},
    {"prompt": "Count to two", "response": "one, two"},
    {"prompt": "Quote", "response": 'He said "yes",\nthen left.'},  # quote, comma, newline
]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _spec(path, **kw):
    return TableConfig(path=str(path), **kw)


def _load(tmp_path, kind, records, **kw):
    return load_rows(_spec(_jsonl(tmp_path / "t.jsonl", records), **kw), kind)


def _strip_rows(rows):
    return [{k: v for k, v in row.items() if k != "row"} for row in rows]


# --- formats ------------------------------------------------------------------------------


def _write_all_formats(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {"jsonl": _jsonl(tmp_path / "t.jsonl", ROWS)}
    paths["csv"] = tmp_path / "t.csv"
    with paths["csv"].open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "response"])
        writer.writeheader()
        writer.writerows(ROWS)
    paths["parquet"] = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), paths["parquet"])
    paths["hf"] = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(paths["hf"]))
    return paths


def test_every_format_loads_the_same_rows(tmp_path):
    for fmt, path in _write_all_formats(tmp_path).items():
        for format_name in ("auto", fmt):
            rows, report = load_rows(_spec(path, format=format_name), "sft")
            assert _strip_rows(rows) == ROWS, (fmt, format_name)
            assert (report.rows, report.kept, report.skipped) == (3, 3, 0)


def test_row_numbers_per_format(tmp_path):
    paths = _write_all_formats(tmp_path)
    # CSV: header is line 1 and the third row's quoted newline makes it span lines 4-5.
    expected = {"jsonl": [1, 2, 3], "csv": [2, 3, 4], "parquet": [1, 2, 3], "hf": [1, 2, 3]}
    for fmt, path in paths.items():
        rows, _ = load_rows(_spec(path), "sft")
        assert [row["row"] for row in rows] == expected[fmt], fmt


def test_read_records_yields_triples_in_order(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n\n[1]\n{bad\n', encoding="utf-8")
    assert list(read_records(_spec(path))) == [
        (1, {"a": 1}, None),
        (3, None, "not a JSON object (list)"),
        (4, None, "not JSON (Expecting property name enclosed in double quotes)"),
    ]


def test_json_array_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    rows, _ = load_rows(_spec(path), "sft")
    assert _strip_rows(rows) == ROWS
    assert [row["row"] for row in rows] == [1, 2, 3]


def test_csv_bom_short_and_long_rows(tmp_path):
    path = tmp_path / "t.csv"
    text = "prompt,response\r\na,b\r\nonly-one-field\r\nc,d,extra\r\n\r\ne,f\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    rows, report = load_rows(_spec(path, max_bad_fraction=0.5), "sft")
    # The BOM is stripped (the first header name is "prompt", not "\ufeffprompt").
    assert [(r["prompt"], r["response"], r["row"]) for r in rows] == [("a", "b", 2), ("e", "f", 6)]
    assert report.reasons == [
        "row 3: has 1 fields, the header has 2",
        "row 4: has 3 fields, the header has 2",
    ]


def test_csv_missing_column_fails_once_naming_the_header(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("question,answer\na,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'prompt'.*\['question', 'answer'\]"):
        load_rows(_spec(path), "sft")


def test_hf_dataset_dict_names_its_splits(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"splits \['train', 'test'\]"):
        load_rows(_spec(tmp_path / "dd"), "sft")
    rows, _ = load_rows(_spec(tmp_path / "dd" / "train"), "sft")  # one split's folder works
    assert _strip_rows(rows) == ROWS


def test_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("x\n")
    with pytest.raises(DataError, match=r"rows\.txt.*jsonl, csv, parquet, hf, argilla"):
        load_rows(_spec(path), "prompts")
    with pytest.raises(DataError, match=r"cannot read sft file .*absent\.jsonl"):
        load_rows(_spec(tmp_path / "absent.jsonl"), "sft")
    with pytest.raises(DataError, match="cannot read sft file"):
        load_rows(_spec(path, format="parquet"), "sft")  # not a Parquet file


# --- mapping and validation -----------------------------------------------------------------


def test_column_mapping(tmp_path):
    records = [{"instruction": "q", "good": "a", "bad": "b", "same": "yes"}]
    spec_kw = {"columns": {"prompt": "instruction", "chosen": "good", "rejected": "bad"}}
    rows, _ = _load(tmp_path, "pairwise", records, **spec_kw)
    assert rows == [{"prompt": "q", "chosen": "a", "rejected": "b", "tie": False, "row": 1}]
    spec_kw["columns"]["tie"] = "same"
    rows, _ = _load(tmp_path, "pairwise", records, **spec_kw)
    assert rows[0]["tie"] is True
    with pytest.raises(DataError, match=r"columns maps \['answer'\]"):
        _load(tmp_path, "pairwise", records, columns={"answer": "good"})


def test_text_validation(tmp_path):
    records = [
        {"prompt": "p", "response": "r"},
        {"prompt": "  ", "response": "r"},
        {"response": "r"},
        {"prompt": "p", "response": 5},
        {"prompt": "p", "response": None},
        {"prompt": "p", "response": ""},
    ]
    rows, report = _load(tmp_path, "sft", records, max_bad_fraction=1.0)
    assert [row["row"] for row in rows] == [1]
    assert report.reasons == [
        "row 2: empty prompt",
        "row 3: no string field 'prompt'",
        "row 4: field 'response' is int, not a string",
        "row 5: no string field 'response'",
        "row 6: empty response",
    ]


def test_scalar_validation(tmp_path):
    records = [
        {"prompt": "p", "response": "r", "score": 1},
        {"prompt": "p", "response": "r", "score": "-2.5"},
        {"prompt": "p", "response": "r", "score": "abc"},
        {"prompt": "p", "response": "r", "score": math.nan},
        {"prompt": "p", "response": "r"},
        {"prompt": "p", "response": "r", "score": True},
        {"prompt": "p", "response": "r", "score": "inf"},
    ]
    rows, report = _load(tmp_path, "scalar", records, max_bad_fraction=1.0)
    assert [(row["score"], row["row"]) for row in rows] == [(1.0, 1), (-2.5, 2)]
    assert all(isinstance(row["score"], float) for row in rows)
    assert report.reasons == [
        "row 3: score 'abc' is not a number",
        "row 4: score nan is not finite",
        "row 5: missing column 'score'",
        "row 6: score True is not a number",
        "row 7: score inf is not finite",
    ]


def test_binary_validation(tmp_path):
    labels = [True, 0, "Yes", " accepted ", "REJECT", "no", "1", "maybe", 2]
    records = [{"prompt": "p", "response": "r", "accepted": v} for v in labels]
    rows, report = _load(tmp_path, "binary", records, max_bad_fraction=1.0)
    assert [row["accepted"] for row in rows] == [True, False, True, True, False, False, True]
    assert report.reasons == [
        "row 8: accepted 'maybe' is not a yes/no label",
        "row 9: accepted 2 is not a yes/no label",
    ]


def test_pairwise_validation(tmp_path):
    records = [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": "a", "rejected": "a"},
        {"prompt": "p", "chosen": "a", "rejected": "a", "tie": "true"},
        {"prompt": "p", "chosen": "a", "rejected": "b", "tie": None},
        {"prompt": "p", "chosen": "a", "rejected": "b", "tie": "sometimes"},
        {"prompt": "p", "rejected": "b"},
    ]
    rows, report = _load(tmp_path, "pairwise", records, max_bad_fraction=1.0)
    assert [(row["row"], row["tie"]) for row in rows] == [(1, False), (3, True), (4, False)]
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "tie", "row"}
    assert report.reasons == [
        "row 2: chosen and rejected are identical",
        "row 5: tie 'sometimes' is not a yes/no label",
        "row 6: no string field 'chosen'",
    ]


def test_every_kind_returns_exactly_its_columns(tmp_path):
    record = {"prompt": "p", "response": "r", "chosen": "a", "rejected": "b", "score": 0.5}
    record |= {"accepted": "yes", "answer": 42, "extra": 1}
    for kind, columns in ROW_KINDS.items():
        rows, _ = _load(tmp_path, kind, [record])
        optional = {"tie"} if kind == "pairwise" else set()
        assert set(rows[0]) == set(columns) | optional | {"row"}, kind


# --- thresholds, limit, report ----------------------------------------------------------------


def test_threshold_fails_just_over_and_passes_at_the_limit(tmp_path):
    records = [{"prompt": f"p{i}"} for i in range(8)] + [{"prompt": ""}, {"nope": 1}]
    rows, report = _load(tmp_path, "prompts", records, max_bad_fraction=0.2)  # 2 of 10: ok
    assert (len(rows), report.skipped) == (8, 2)
    with pytest.raises(DataError) as err:
        _load(tmp_path, "prompts", records, max_bad_fraction=0.19)
    assert str(err.value) == (
        f"{tmp_path / 't.jsonl'}: 2 of 10 rows malformed, more than max_bad_fraction=0.19; "
        "first: ['row 9: empty prompt', \"row 10: no string field 'prompt'\"]"
    )


def test_no_good_rows_fails(tmp_path):
    with pytest.raises(DataError, match="no usable sft row among 1 rows"):
        _load(tmp_path, "sft", [{"prompt": "p"}], max_bad_fraction=1.0)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no usable prompts row among 0 rows"):
        load_rows(_spec(tmp_path / "empty.jsonl"), "prompts")


def test_limit_stops_after_that_many_good_rows(tmp_path):
    records = [{"prompt": "a"}, {"prompt": ""}, {"prompt": "b"}, {"prompt": "c"}]
    rows, report = _load(tmp_path, "prompts", records, limit=2, max_bad_fraction=0.5)
    assert [row["prompt"] for row in rows] == ["a", "b"]
    assert (report.rows, report.kept, report.skipped) == (3, 2, 1)


def test_report_metrics_and_reason_cap():
    report = LoadReport(rows=20, kept=5)
    for row in range(15):
        report.skip(row, "bad")
    report.filtered, report.truncated = 2, 3
    assert len(report.reasons) == 10 and report.skipped == 15
    assert report.metrics("sft") == {
        "sft/rows": 20.0,
        "sft/kept": 5.0,
        "sft/skipped": 15.0,
        "sft/filtered": 2.0,
        "sft/truncated": 3.0,
    }
    assert set(LoadReport().metrics()) == {
        "data/rows",
        "data/kept",
        "data/skipped",
        "data/filtered",
        "data/truncated",
    }
