"""The tool demo's data: multi-digit arithmetic word problems, generated from a seed.

Each problem is one sentence or two around two or three numbers of two to four digits and one
calculation (a product, a sum, a difference, an equal split, or a product of three); its answer
is an integer. A 135M model cannot multiply 47 × 86 in its head; with the calculator tool
(:class:`rayrlhf.envs.calculator.CalculatorEnv`) it needs only to write the expression.

Files (``python -m rayrlhf.demo.arith_data --out DIR``):

- ``prompts_train.jsonl`` / ``prompts_heldout.jsonl``: ``{"prompt", "answer"}`` (held out: another
  seed, no question of the training set);
- ``sft.jsonl``: tool-use traces for the SFT warm-up, ``{"prompt", "response"}``: the prompt as
  the environment shows it, the response ``<calc>EXPR</calc> = RESULT`` then ``Answer: RESULT``;
  of every kind: the warm-up teaches the tool's form, GRPO its accurate use (a warm-up that
  leaves kinds out gives GRPO groups that fail alike on them: no signal);
- ``prompts_direct.jsonl``: the held-out problems asking for the answer directly (no tool), for
  the no-tool comparison.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

from rayrlhf.envs.calculator import INSTRUCTION
from rayrlhf.envs.tools import calculate

DIRECT = "Give the final answer on its own line as: Answer: NUMBER"

# (question template, expression template, number ranges): each a different calculation.
TEMPLATES: list[tuple[str, str, list[tuple[int, int]]]] = [
    ("A crate holds {a} bottles. How many bottles are in {b} crates?", "{a}*{b}",
     [(12, 99), (12, 99)]),
    ("A farm had {a} sheep and bought {b} more. How many sheep does it have now?", "{a}+{b}",
     [(120, 9999), (120, 9999)]),
    ("A library had {a} books and gave away {b}. How many books are left?", "{a}-{b}",
     [(5000, 9999), (120, 4999)]),
    ("A ticket costs {a} dollars. How much do {b} tickets cost?", "{a}*{b}",
     [(13, 250), (11, 99)]),
    ("A truck carries {a} boxes of {b} cans each, {c} times a week. How many cans a week?",
     "{a}*{b}*{c}", [(11, 60), (12, 48), (2, 9)]),
    ("{p} pencils are shared equally by {b} pupils. How many pencils does each pupil get?",
     "{p}/{b}", [(12, 99), (11, 60)]),
]  # fmt: skip


def problem(rng: random.Random) -> dict[str, str]:
    """One problem: ``prompt`` (the question), ``answer`` and ``expression``."""
    question, expression, ranges = rng.choice(TEMPLATES)
    values = dict(zip("abc", (rng.randint(lo, hi) for lo, hi in ranges), strict=False))
    if "{p}" in question:  # an equal split: the total is a multiple of the divisor
        values["p"] = values["a"] * values["b"]
    expr = expression.format(**values)
    # The calculator the policy will call computes the reference answer too.
    return {"prompt": question.format(**values), "answer": calculate(expr), "expression": expr}


def problems(n: int, seed: int, avoid: set[str] | None = None) -> list[dict[str, str]]:
    """``n`` distinct problems from ``seed``, none of whose questions is in ``avoid``."""
    rng, out, seen = random.Random(seed), [], set(avoid or ())
    while len(out) < n:
        p = problem(rng)
        if p["prompt"] not in seen:
            seen.add(p["prompt"])
            out.append(p)
    return out


def trace(p: dict[str, str], instruction: str = INSTRUCTION) -> dict[str, str]:
    """An SFT row: the prompt as the environment shows it, the tool call, its result, the
    answer."""
    return {
        "prompt": f"{p['prompt']}\n{instruction}",
        "response": f"<calc>{p['expression']}</calc> = {p['answer']}\nAnswer: {p['answer']}",
    }


def write(out: Path, train: int = 2000, heldout: int = 128, sft: int = 400, seed: int = 0) -> None:
    """Write the demo's four files into ``out`` (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    train_rows = problems(train, seed)
    held_rows = problems(heldout, seed + 1, {p["prompt"] for p in train_rows})
    sft_rows = problems(sft, seed + 2, {p["prompt"] for p in held_rows})

    def dump(name: str, rows: list[dict], fields: Callable[[dict], dict]) -> None:
        (out / name).write_text("".join(json.dumps(fields(r)) + "\n" for r in rows))

    def qa(r: dict) -> dict:
        return {"prompt": r["prompt"], "answer": r["answer"]}

    dump("prompts_train.jsonl", train_rows, qa)
    dump("prompts_heldout.jsonl", held_rows, qa)
    dump("prompts_direct.jsonl", held_rows,
         lambda r: {"prompt": f"{r['prompt']}\n{DIRECT}", "answer": r["answer"]})  # fmt: skip
    dump("sft.jsonl", sft_rows, trace)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the tool demo's arithmetic problems.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write(args.out, seed=args.seed)
    print(f"wrote arithmetic problems to {args.out}")


if __name__ == "__main__":
    main()
