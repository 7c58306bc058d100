"""The human-feedback loop on the tiny model: `rayrlhf label` → people rank in Argilla →
`rayrlhf argilla` → a reward model trained on their rankings."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from rayrlhf.config import load, to_dict
from rayrlhf.data.argilla import main as argilla_main
from rayrlhf.data.argilla_sdk import sdk_records, sdk_settings
from rayrlhf.loops.label import main as label_main
from rayrlhf.roles.supervised import SupervisedLearner

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from argilla_stub import argilla_server  # noqa: E402

rg = pytest.importorskip("argilla", reason="the Argilla SDK: bash launch/setup.sh installs it")
pytestmark = pytest.mark.integration


def _annotate(record, user: uuid.UUID) -> None:
    """An annotator who prefers the shorter response (3 when equally long), and who writes a
    correction when both responses are longer than three words."""
    first, second = (len(record.fields[k].split()) for k in ("response-1", "response-2"))
    rank = 3 if first == second else (1 if first < second else 2)
    record.responses.add(rg.Response("response_ranking", rank, user_id=user, status="submitted"))
    if min(first, second) > 3:
        fix = rg.Response("correct_response", "good film", user_id=user, status="submitted")
        record.responses.add(fix)


def test_label_rank_convert_and_train_a_reward_model(ray_local, make_config, tiny_model, tmp_path):
    config = make_config("rollout.chunk_size=8", "rollout.template=plain")
    config_file = tmp_path / "label.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(config)))
    words = "the a movie film plot actor scene story".split()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"{a} {b} {c}"}) + "\n"
            for a in words
            for b, c in [("was", "very"), ("is", "quite"), ("and", "not"), ("but", "so")]
        )
    )
    out = tmp_path / "to_label"
    args = [str(config_file), "--prompts", str(prompts), "--limit", "32"]
    with argilla_server() as (url, server):
        push = ["--argilla-url", url, "--api-key", "key", "--dataset", "reviews-to-rank"]
        assert label_main([*args, "--out", str(out), *push]) == 0
    (dataset,) = server.datasets.values()  # created through the SDK, published, records in
    assert dataset["name"] == "reviews-to-rank" and dataset["status"] == "ready"
    names = {kind: [x.get("name") for x in v] for (_, kind), v in server.parts.items()}
    assert names["fields"] == ["prompt", "response-1", "response-2"]
    assert names["questions"] == ["response_ranking", "correct_response"]
    sent = next(v for (_, kind), v in server.parts.items() if kind == "records")

    settings = json.loads((out / "settings.json").read_text())
    assert [f["name"] for f in settings["fields"]] == ["prompt", "response-1", "response-2"]
    ranking, correction = settings["questions"]
    assert ranking["name"] == "response_ranking" and ranking["type"] == "rating"
    assert [o["value"] for o in ranking["settings"]["options"]] == [1, 2, 3]
    assert (
        "1: response-1 is better" in ranking["title"]
        and "3: both are equally good" in (ranking["title"])
    )
    assert correction["name"] == "correct_response" and not correction["required"]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    meta = json.loads((out / "label.json").read_text())
    skipped = meta["empty_responses_skipped"] + meta["equal_responses_skipped"]
    assert len(records) == 32 - skipped > 24
    assert sorted(records[0]) == ["id", "prompt", "response-1", "response-2"]
    assert sum(r["response-1"] != r["response-2"] for r in records) > 20  # two draws each
    assert meta["policy"] == str(tiny_model) and meta["sampling"]["temperature"] == 1.0
    assert [r["external_id"] for r in sent] == [r["id"] for r in records]
    assert [r["fields"] for r in sent] == [{k: r[k] for k in r if k != "id"} for r in records]
    assert label_main([*args, "--out", str(out)]) == 2  # never overwritten

    # The SDK reads the folder; people rank (Argilla 2.x's record export shape).
    user = uuid.uuid4()
    with argilla_server() as (url, _):
        rg.Argilla(api_url=url, api_key="offline", retries=0)
        assert [q.name for q in sdk_settings(out).questions] == [
            "response_ranking",
            "correct_response",
        ]
        ranked = sdk_records(out)
        for record in ranked:
            _annotate(record, user)
        export = tmp_path / "export.jsonl"
        export.write_text("".join(json.dumps(r.to_dict(), default=str) + "\n" for r in ranked))
    assert argilla_main([str(export), "--out", str(tmp_path / "rows")]) == 0
    pairs = [json.loads(x) for x in (tmp_path / "rows" / "pairs.jsonl").read_text().splitlines()]
    ties = sum(p["tie"] for p in pairs)
    assert len(pairs) == len(records) and 0 < ties < len(pairs)
    assert all(len(p["chosen"].split()) < len(p["rejected"].split()) for p in pairs if not p["tie"])
    fixes = (tmp_path / "rows" / "sft.jsonl").read_text().splitlines()
    assert fixes and all(json.loads(x)["response"] == "good film" for x in fixes)

    rm = load(
        None,
        [
            f"model.policy={tiny_model}",
            f"data.prompts={prompts}",
            f"reward_model.model={tiny_model}",
            f"reward_model.data.path={tmp_path / 'rows' / 'pairs.jsonl'}",
            "reward_model.heldout_fraction=0.0",
            "reward_model.lr=3e-3",
            "reward_model.epochs=8",
            "reward_model.learner.minibatch_size=8",
            "reward_model.learner.micro_batch_size=8",
        ],
    )
    learner = SupervisedLearner(rm, "reward_model", 0)
    plan = learner.setup(*learner.rendezvous_address())
    assert plan["train_items"] == len(pairs) == plan["data/kept"]
    first = learner.train_step(0)
    for step in range(1, learner.total_steps):
        last = learner.train_step(step)
    assert last["loss/train"] < first["loss/train"] - 0.1, (first, last)
