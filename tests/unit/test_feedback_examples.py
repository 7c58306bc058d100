"""The README's three example files of feedback load as the stages read them."""

from __future__ import annotations

from pathlib import Path

from rayrlhf.config import TableConfig
from rayrlhf.data.tables import load_rows

EXAMPLES = Path(__file__).parents[2] / "launch" / "data" / "feedback"


def test_sft_scores_and_rankings_examples_load():
    accepted, _ = load_rows(TableConfig(path=str(EXAMPLES / "sft_accepted.jsonl")), "binary")
    assert [r["accepted"] for r in accepted] == [True, False, True, False]
    scores, _ = load_rows(TableConfig(path=str(EXAMPLES / "rm_scores.jsonl")), "scalar")
    assert [r["score"] for r in scores] == [4.5, 2.0, 0.5, 5.0]
    rankings = TableConfig(path=str(EXAMPLES / "rm_rankings.jsonl"), format="argilla")
    pairs, _ = load_rows(rankings, "pairwise")
    assert [p["tie"] for p in pairs] == [False, False, True, True]
    assert pairs[1]["chosen"].startswith("A retired detective")  # ranked 2: the second wins
    fixes, _ = load_rows(rankings, "sft")
    assert [f["response"] for f in fixes] == ["The long, silent dinner scene near the end."]
