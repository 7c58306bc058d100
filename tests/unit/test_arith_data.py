"""The tool demo's problems: deterministic, answers the calculator agrees with, a held-out set
apart from the training set, warm-up traces of every kind, in the environment's form."""

from __future__ import annotations

import json

from rayrlhf.demo.arith_data import TEMPLATES, problems, write
from rayrlhf.demo.arith_report import episodes_to_show, shown
from rayrlhf.envs.calculator import CalculatorEnv
from rayrlhf.envs.tools import calculate
from rayrlhf.rewards.verifiers import numeric_answer


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_problems_are_seeded_distinct_and_answered_by_their_expression():
    first = problems(200, seed=5)
    assert first == problems(200, seed=5) and first != problems(200, seed=6)
    assert len({p["prompt"] for p in first}) == 200
    assert all(calculate(p["expression"]) == p["answer"] for p in first)
    assert all(p["answer"].lstrip("-").isdigit() for p in first)  # integers, splits exact


def test_the_written_files(tmp_path):
    write(tmp_path, train=300, heldout=40, sft=60, seed=1)
    train, held = _rows(tmp_path / "prompts_train.jsonl"), _rows(tmp_path / "prompts_heldout.jsonl")
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    direct = _rows(tmp_path / "prompts_direct.jsonl")
    assert [d["answer"] for d in direct] == [h["answer"] for h in held]
    assert all(d["prompt"].startswith(h["prompt"]) for d, h in zip(direct, held, strict=True))
    sft = _rows(tmp_path / "sft.jsonl")
    kinds = {i for i, (q, _, _) in enumerate(TEMPLATES) for r in sft
             if r["prompt"].split("\n")[0].split(" ")[1:3] == q.split(" ")[1:3]}  # fmt: skip
    assert kinds == set(range(len(TEMPLATES)))  # every kind
    env = CalculatorEnv()
    for row in sft:  # the prompt as the environment shows it; the trace the verifier accepts
        question = row["prompt"].split("\n")[0]
        assert row["prompt"] == env.reset({"prompt": question}, "x")
        answer = row["response"].rsplit("Answer: ", 1)[1]
        assert numeric_answer([], [row["response"]], [{"answer": answer}])["correct"] == [1.0]


def test_the_report_shows_fixed_episodes_first_with_the_tools_answers_marked():
    pairs = [{"id": i, "reward/correct": c} for i, c in
             enumerate([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])]  # fmt: skip
    assert [p["id"] for p in episodes_to_show(pairs)] == [1, 3, 0]
    text = "<calc>47*86</calc> = 4042\nAnswer: 4042"
    assert shown(text) == "<calc>47*86</calc>⟦ = 4042⟧\nAnswer: 4042"
