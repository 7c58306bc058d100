"""Labelling datasets for Argilla: the article's names and values, the SDK reading them back."""

from __future__ import annotations

import json

import pytest
import yaml
from argilla_stub import argilla_server

from rayrlhf.config import to_dict
from rayrlhf.data.labelling import ranking_records, settings, write_dataset
from rayrlhf.loops.label import label_chunks, pair_by_id, rankable
from rayrlhf.loops.label import main as label_main

rg = pytest.importorskip("argilla", reason="the Argilla SDK: bash launch/setup.sh installs it")


def test_ranking_settings_have_the_guide_s_fields_questions_and_values():
    s = settings("ranking")
    assert [f["name"] for f in s["fields"]] == ["prompt", "response-1", "response-2"]
    assert all(f["type"] == "text" and f["required"] for f in s["fields"])
    ranking, correction = s["questions"]
    assert (ranking["name"], ranking["type"], ranking["required"]) == (
        "response_ranking",
        "rating",
        True,
    )
    assert [o["value"] for o in ranking["settings"]["options"]] == [1, 2, 3]
    for meaning in ("1: response-1 is better", "2: response-2 is better", "3: both are equally"):
        assert meaning in ranking["title"]
    assert (correction["name"], correction["type"], correction["required"]) == (
        "correct_response",
        "text",
        False,
    )
    assert "response_ranking" in s["guidelines"]


def test_the_sdk_builds_settings_and_records_from_the_files(tmp_path):
    folder = write_dataset(
        tmp_path / "ds", "ranking", ranking_records([("p", "a", "b"), ("q", "c", "d")]), {}
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "dataset",
        "label.json",
        "records.jsonl",
        "settings.json",
    ]
    from datasets import load_from_disk

    assert load_from_disk(str(folder / "dataset"))[1] == {
        "id": "pair-1",
        "prompt": "q",
        "response-1": "c",
        "response-2": "d",
    }
    from rayrlhf.data.argilla_sdk import sdk_records, sdk_settings

    with argilla_server() as (url, _):
        rg.Argilla(api_url=url, api_key="offline", retries=0)
        read = sdk_settings(folder)
        assert [q.name for q in read.questions] == ["response_ranking", "correct_response"]
        assert list(read.questions[0].values) == [1, 2, 3]
        assert [f.name for f in read.fields] == ["prompt", "response-1", "response-2"]
        records = sdk_records(folder)
        assert [r.id for r in records] == ["pair-0", "pair-1"]
        assert records[1].fields["response-2"] == "d"
    with pytest.raises(FileExistsError, match="already holds"):
        write_dataset(folder, "ranking", [], {})


def test_completion_task_writes_prompts_for_people_to_answer(make_config, tmp_path):
    """The SFT task needs no generation: prompts alone, a text question ``completion``."""
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(make_config())))
    out = tmp_path / "sft_task"
    assert label_main([str(config_file), "--out", str(out), "--task", "completion"]) == 0
    s = json.loads((out / "settings.json").read_text())
    assert [f["name"] for f in s["fields"]] == ["prompt"]
    assert [(q["name"], q["type"], q["required"]) for q in s["questions"]] == [
        ("completion", "text", True)
    ]
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert records and sorted(records[0]) == ["id", "prompt"]


def test_two_responses_per_prompt_are_one_group_with_their_own_ids():
    (chunk,) = label_chunks(["a", "b"], chunk_size=4)
    assert chunk.group_size == 2 and chunk.prompts == ["a", "a", "b", "b"]
    assert chunk.sample_ids == ["label-0.1", "label-0.2", "label-1.1", "label-1.2"]
    assert [len(c.prompts) for c in label_chunks(list("abcde"), chunk_size=2)] == [4, 4, 2]


def test_responses_pair_by_sample_id_whatever_order_they_come_back_in():
    rows = [
        ("label-1.2", "b", "b2"),
        ("label-0.1", "a", "a1"),
        ("label-1.1", "b", "b1"),
        ("label-0.2", "a", "a2"),
    ]
    assert pair_by_id(rows, 2) == [("a", "a1", "a2"), ("b", "b1", "b2")]
    with pytest.raises(RuntimeError, match="missing"):
        pair_by_id(rows[:3], 2)
    with pytest.raises(RuntimeError, match="twice"):
        pair_by_id([*rows, rows[0]], 2)
    with pytest.raises(RuntimeError, match="different prompts"):
        pair_by_id([*rows[:3], ("label-0.2", "z", "a2")], 2)


def test_pairs_with_an_empty_or_twice_the_same_response_are_left_out_and_counted():
    pairs = [("p", " a", "b"), ("q", " ", "c"), ("r", "d ", " d"), ("s", "e", "f")]
    kept, skipped = rankable(pairs)
    assert kept == [("p", " a", "b"), ("s", "e", "f")]
    assert skipped == {"empty_responses_skipped": 1, "equal_responses_skipped": 1}
