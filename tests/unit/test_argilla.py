"""Argilla ranking exports: every record shape, votes and ties, corrections, bad records, CLI."""

from __future__ import annotations

import json

import pytest

from rayrlhf.config import TableConfig
from rayrlhf.data.argilla import convert_records, main
from rayrlhf.data.tables import DataError, load_rows

TEXTS = {"prompt": "Greet me", "response-1": "Hello!", "response-2": "Go away."}


def _convert(records):
    return convert_records((i, r, None) for i, r in enumerate(records, start=1))


def _flat(ranking, **extra):
    return {**TEXTS, "response_ranking": ranking, **extra}


def _v1(answers, **fields):
    """Argilla 1.x format_as("datasets"): a list of {"user_id", "value", "status"} per question."""
    column = [{"user_id": f"u{i}", "value": v, "status": s} for i, (v, s) in enumerate(answers)]
    return {**TEXTS, **fields, "response_ranking": column, "response_ranking-suggestion": 2}


def _v1_columnar(answers):
    """The same read back through ``datasets`` (a Sequence of structs): a dict of lists."""
    return {
        **TEXTS,
        "response_ranking": {
            "user_id": [f"u{i}" for i in range(len(answers))],
            "value": [v for v, _ in answers],
            "status": [s for _, s in answers],
        },
    }


def _v2_flat(answers, corrections=()):
    """Argilla 2.x records.to_list(flatten=True) / to_datasets()."""
    record = {
        "id": "r1",
        "status": "completed",
        **TEXTS,
        "response_ranking.responses": [v for v, _ in answers],
        "response_ranking.responses.users": [f"u{i}" for i in range(len(answers))],
        "response_ranking.responses.status": [s for _, s in answers],
        "response_ranking.suggestion": 2,
    }
    if corrections:
        record["correct_response.responses"] = [v for v, _ in corrections]
        record["correct_response.responses.status"] = [s for _, s in corrections]
    return record


def _v2_nested(answers, corrections=()):
    """Argilla 2.x records.to_list() / to_json(): fields and responses nested."""
    responses = {
        "response_ranking": [{"value": v, "user_id": "u", "status": s} for v, s in answers]
    }
    if corrections:
        responses["correct_response"] = [{"value": v, "user_id": "u"} for v, _ in corrections]
    return {
        "id": "r1",
        "fields": dict(TEXTS),
        "metadata": {},
        "suggestions": {"response_ranking": {"value": 2, "score": 0.9, "agent": "m"}},
        "responses": responses,
        "vectors": {},
    }


def _v1_record(answers):
    """Argilla 1.x FeedbackRecord dict / server API: one response per annotator."""
    return {
        "fields": dict(TEXTS),
        "responses": [
            {"user_id": f"u{i}", "values": {"response_ranking": {"value": v}}, "status": s}
            for i, (v, s) in enumerate(answers)
        ],
    }


SHAPES = [_v1, _v1_columnar, _v2_flat, _v2_nested, _v1_record]
SUB = "submitted"


def _verdict(pair):
    if pair["tie"]:
        return "tie"
    return 1 if pair["chosen"] == TEXTS["response-1"] else 2


def test_flat_values_map_to_chosen_rejected_and_tie():
    out = _convert([_flat(1), _flat(2), _flat(3), _flat("2")])
    assert out.pairs[0] == {
        "prompt": "Greet me",
        "chosen": "Hello!",
        "rejected": "Go away.",
        "tie": False,
        "row": 1,
    }
    assert (out.pairs[1]["chosen"], out.pairs[1]["rejected"]) == ("Go away.", "Hello!")
    assert out.pairs[2] == {**out.pairs[0], "tie": True, "row": 3}  # response-1 first
    assert _verdict(out.pairs[3]) == 2  # CSV gives text
    assert (out.report.rows, out.report.kept, out.report.skipped) == (4, 4, 0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda f: f.__name__)
def test_every_shape_single_annotator(shape):
    out = _convert([shape([(v, SUB)]) for v in (1, 2, 3)])
    assert [_verdict(p) for p in out.pairs] == [1, 2, "tie"]
    assert out.report.skipped == 0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda f: f.__name__)
def test_every_shape_votes_and_statuses(shape):
    records = [
        shape([(2, SUB), (1, SUB), (2, SUB)]),  # majority: 2
        shape([(1, SUB), (2, SUB)]),  # split: tie
        shape([(3, SUB), (3, SUB)]),  # all equal: tie
        shape([(2, "draft"), (1, SUB), (2, "discarded")]),  # only the submitted one counts
        shape([(1, "draft"), (2, "discarded")]),  # nothing submitted: skipped
    ]
    out = _convert(records)
    assert [(p["row"], _verdict(p)) for p in out.pairs] == [(1, 2), (2, "tie"), (3, "tie"), (4, 1)]
    assert out.report.reasons == ["row 5: no submitted response_ranking"]


def test_no_status_counts_every_answer():
    # Older 2.x exports have {"value", "user_id"} only; a flat list of values likewise.
    record = _v2_nested([(2, None), (2, None), (1, None)])
    out = _convert([record, _flat([1, 1, 2])])
    assert [_verdict(p) for p in out.pairs] == [2, 1]


def test_corrections_become_sft_rows():
    records = [
        _flat(1, correct_response="Hello, friend!"),  # a plain field
        _flat(2, correct_response="   "),  # empty: no SFT row
        _v1([(1, SUB)], correct_response=[{"user_id": "u", "value": "Hi!", "status": SUB}]),
        _v1([(1, SUB)], correct_response=[{"user_id": "u", "value": "Draft", "status": "draft"}]),
        _v2_flat([(1, SUB)], corrections=[("A", SUB), ("B", SUB), ("B", SUB)]),
        _v2_nested([(3, SUB)], corrections=[("First", None), ("Second", None)]),
        _flat(7, correct_response="Not used: the record is malformed"),
    ]
    out = _convert(records)
    assert out.sft == [
        {"prompt": "Greet me", "response": "Hello, friend!", "row": 1},
        {"prompt": "Greet me", "response": "Hi!", "row": 3},
        {"prompt": "Greet me", "response": "B", "row": 5},  # the majority
        {"prompt": "Greet me", "response": "First", "row": 6},  # no majority: the first
    ]
    assert len(out.pairs) == 6


def test_malformed_records_counted_with_row_numbers():
    records = [
        _flat(1),
        {"response-1": "a", "response-2": "b", "response_ranking": 1},
        {**TEXTS, "prompt": " ", "response_ranking": 1},
        {"prompt": "p", "response-1": "a", "response_ranking": 1},
        _flat(4),
        _flat(None),
        {**TEXTS, "response-2": "Hello!", "response_ranking": 1},
        {**TEXTS, "response-2": "Hello!", "response_ranking": 3},  # identical but a tie: fine
        {"prompt": "p"},
    ]
    items = [(i, r, None) for i, r in enumerate(records, start=1)]
    items.insert(3, (99, None, "not JSON (Expecting value)"))
    out = convert_records(items)
    assert [p["row"] for p in out.pairs] == [1, 8]
    assert out.report.reasons == [
        "row 2: no string field 'prompt'",
        "row 3: empty prompt",
        "row 99: not JSON (Expecting value)",
        "row 4: no string field 'response-2'",
        "row 5: response_ranking value 4 is not 1, 2 or 3",
        "row 6: no submitted response_ranking",
        "row 7: response-1 and response-2 are identical but ranked 1",
        "row 9: no string field 'response-1'",
    ]
    assert (out.report.rows, out.report.kept, out.report.skipped) == (10, 2, 8)


def test_column_renames():
    record = {"instruction": "q", "a": "x", "b": "y", "pref": 2, "fix": "z"}
    columns = {
        "prompt": "instruction",
        "response-1": "a",
        "response-2": "b",
        "response_ranking": "pref",
        "correct_response": "fix",
    }
    out = convert_records([(1, record, None)], columns=columns)
    assert (out.pairs[0]["chosen"], out.sft[0]["response"]) == ("y", "z")
    with pytest.raises(DataError, match="columns maps"):
        convert_records([], columns={"chosen": "a"})


def test_load_rows_with_argilla_format(tmp_path):
    path = tmp_path / "export.jsonl"
    records = [_v2_flat([(1, SUB)], corrections=[("Fixed", SUB)]), _v2_flat([(3, SUB)]), {}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    spec = TableConfig(path=str(path), format="argilla", max_bad_fraction=0.4)
    pairs, report = load_rows(spec, "pairwise")
    assert [(p["row"], p["tie"]) for p in pairs] == [(1, False), (2, True)]
    assert report.reasons == ["row 3: no string field 'prompt'"]
    sft, _ = load_rows(spec, "sft")
    assert sft == [{"prompt": "Greet me", "response": "Fixed", "row": 1}]
    with pytest.raises(DataError, match="1 of 3 rows malformed"):
        load_rows(spec.model_copy(update={"max_bad_fraction": 0.3}), "pairwise")
    with pytest.raises(DataError, match="pairwise or sft rows, not scalar"):
        load_rows(spec, "scalar")


def test_argilla_v1_saved_dataset(tmp_path):
    import datasets
    from datasets import Features, Sequence, Value

    # Argilla 1.x push_to_huggingface features: the question column is a Sequence of structs.
    answer = {"user_id": Value("string"), "value": Value("int32"), "status": Value("string")}
    features = Features({name: Value("string") for name in TEXTS})
    features["response_ranking"] = Sequence(answer)
    columns = {name: [text] for name, text in TEXTS.items()}
    columns["response_ranking"] = [{"user_id": ["a", "b"], "value": [2, 2], "status": [SUB, SUB]}]
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(tmp_path / "ds"))
    pairs, _ = load_rows(TableConfig(path=str(tmp_path / "ds"), format="argilla"), "pairwise")
    assert [_verdict(p) for p in pairs] == [2]


def test_cli_writes_pairs_and_sft(tmp_path, capsys):
    export = tmp_path / "export.json"
    records = [
        _v2_nested([(2, SUB)], corrections=[("Better", SUB)]),
        _v2_nested([(3, SUB)]),
        _v2_nested([(1, "draft")]),
    ]
    export.write_text(json.dumps(records), encoding="utf-8")  # 2.x to_json: one JSON array
    assert main([str(export), "--out", str(tmp_path / "out")]) == 0
    pairs, sft = (
        [json.loads(line) for line in (tmp_path / "out" / name).read_text().splitlines()]
        for name in ("pairs.jsonl", "sft.jsonl")
    )
    assert [(p["chosen"], p["tie"], p["row"]) for p in pairs] == [
        ("Go away.", False, 1),
        ("Hello!", True, 2),
    ]
    assert sft == [{"prompt": "Greet me", "response": "Better", "row": 1}]
    printed = capsys.readouterr().out
    assert "3 records, 1 skipped" in printed
    assert "2 pairs (1 ties)" in printed and "1 SFT rows" in printed
    assert "row 3: no submitted response_ranking" in printed


def test_cli_error_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert "absent.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    assert main([str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "no usable record" in capsys.readouterr().err
