"""Prompt loading: malformed rows skipped and counted with row numbers; stable chunking."""

from __future__ import annotations

import json

import pytest

from rayrlhf.data.prompts import DataError, PromptSource, load_prompts


def _write(tmp_path, lines):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_skipped_and_counted(tmp_path):
    path = _write(
        tmp_path,
        [
            json.dumps({"prompt": "a"}),
            "{not json",
            json.dumps({"prompt": " "}),
            json.dumps({"text": "b"}),
            json.dumps({"prompt": "c"}),
        ],
    )
    prompts, report = load_prompts(path, "prompt", max_bad_fraction=0.8)
    assert prompts == ["a", "c"]
    assert (report.rows, report.kept, report.skipped) == (5, 2, 3)
    assert report.reasons == [
        "row 2: not JSON (Expecting property name enclosed in double quotes)",
        "row 3: empty prompt",
        "row 4: no string field 'prompt'",
    ]


def test_too_many_bad_rows_fail(tmp_path):
    path = _write(tmp_path, [json.dumps({"prompt": "a"}), "{bad", "{bad"])
    with pytest.raises(DataError, match="2 of 3 rows malformed"):
        load_prompts(path, "prompt", max_bad_fraction=0.5)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read prompts file"):
        load_prompts(tmp_path / "none.jsonl", "prompt", 0.1)


def test_step_chunks_are_a_pure_function_of_step():
    src = PromptSource([f"p{i}" for i in range(5)], seed=1)
    chunks = src.step_chunks(3, prompts_per_step=4, chunk_size=2)
    again = PromptSource([f"p{i}" for i in range(5)], seed=1).step_chunks(3, 4, 2)
    assert chunks == again
    assert [c.sample_ids for c in chunks] == [["3-0", "3-1"], ["3-2", "3-3"]]
    # Each epoch (5 prompts) deals every prompt exactly once.
    dealt = [p for s in range(5) for c in src.step_chunks(s, 4, 2) for p in c.prompts]
    for epoch in range(4):
        assert sorted(dealt[epoch * 5 : epoch * 5 + 5]) == [f"p{i}" for i in range(5)]
