"""Weight sync time and bytes/s against model size, object store vs broadcast, on the real roles.

    .venv/bin/python benchmarks/weight_sync.py [--rollout-workers 2] [--repeats 3]

For each random GPT-2 size, one OnlineTrainer per method (learner, R rollout workers) is built and
The publisher's ``publish`` is timed ``--repeats`` times after a warm-up. Prints a table and
one JSON line.
A benchmark prints figures; it never fails on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray

from rayrlhf.config import load
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.tiny_models import WORDS, save_tiny

SIZES = [(2, 64), (4, 256), (6, 512), (12, 768)]  # (layers, hidden); the last is GPT-2-small-wide
METHODS = ("object_store", "broadcast")


def _time_sync(model: Path, prompts: Path, out: str, method: str, args: argparse.Namespace) -> dict:
    cfg = load(
        None,
        [
            f"model.policy={model}",
            f"data.prompts={prompts}",
            f"run.output_dir={out}",
            f"run.name=sync-{method}",
            "run.progress_bar=false",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
            f"rollout.num_workers={args.rollout_workers}",
            f"weight_sync.method={method}",
            f"learner.num_ranks={args.learner_ranks}",
            f"learner.zero_stage={args.zero_stage}",
        ],
    )
    trainer = OnlineTrainer(cfg)
    try:
        trainer.publisher.publish(
            trainer.policy_version, trainer.step
        )  # warm-up: first gathers, first group traffic
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            trainer.publisher.publish(trainer.policy_version, trainer.step)
            times.append(time.perf_counter() - start)
        return {"seconds": statistics.median(times), "bytes": trainer.publisher.bytes}
    finally:
        trainer.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollout-workers", type=int, default=2)
    parser.add_argument("--learner-ranks", type=int, default=1)
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": w}) + "\n" for w in WORDS))
        for layers, hidden in SIZES:
            model = save_tiny(Path(tmp) / f"m{layers}x{hidden}", layers=layers, hidden=hidden)
            for method in METHODS:
                with contextlib.redirect_stdout(sys.stderr):
                    res = _time_sync(model, prompts, tmp, method, args)
                rows.append({"model": f"gpt2 {layers}x{hidden}", "method": method, **res})
    ray.shutdown()

    print(
        f"weight sync to {args.rollout_workers} rollout workers, {args.learner_ranks} learner "
        f"rank(s), ZeRO-{args.zero_stage}, CPU (gloo), median of {args.repeats}"
    )
    print(f"{'model':<16}{'method':<14}{'MB':>9}{'seconds':>10}{'MB/s':>10}")
    for r in rows:
        mb = r["bytes"] / 2**20
        r["mb_per_s"] = mb / r["seconds"] if r["seconds"] else 0.0
        print(
            f"{r['model']:<16}{r['method']:<14}{mb:>9.1f}{r['seconds']:>10.3f}{r['mb_per_s']:>10.1f}"
        )
    print(json.dumps({"benchmark": "weight_sync", "rows": rows}))


if __name__ == "__main__":
    main()
