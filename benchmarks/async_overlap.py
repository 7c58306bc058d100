"""Synchronous vs asynchronous steps with SIMULATED roles: step time against max(generate, train).

    .venv/bin/python benchmarks/async_overlap.py [--ratios 0.5 1 2] [--staleness 0 1 2]
        [--generate-s 1.0] [--workers 2] [--chunks-per-worker 2] [--steps 6] [--weights-mb 50]

Generation and training are sleeps (``benchmarks/simulated_roles.py``): a step's generation takes
``--generate-s`` (each of ``--workers`` workers sleeps for its ``--chunks-per-worker`` chunks),
training takes ``--generate-s / ratio``. Everything else is the real driver: dispatch, the
object-store transfers of rollouts and weights, the ledger, the per-chunk policy versions.

Synchronously a step costs generate + train (+ fetch and weight sync); with
``rollout.max_staleness`` k ≥ 1 the next steps generate while one trains, so a step should cost
about max(generate, train). The goal: at most 1.15 × max(generate, train) with staleness 1.

Stdout: a table, then one JSON line. A benchmark prints figures; it never fails on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
from control_plane import ROLES, write_prompts  # benchmarks/ is sys.path[0] as a script
from simulated_roles import SimSettings

from rayrlhf.config import load
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.metrics import read_metrics


def measure(args: argparse.Namespace, tmp: Path, ratio: float, staleness: int) -> dict[str, Any]:
    """One trainer at ``staleness``; the step period over its last ``--steps`` steps."""
    warm = 1 + staleness  # the first steps start the actors and fill the pipeline
    per_step = args.workers * args.chunks_per_worker * args.chunk_size
    cfg = load(
        None,
        [
            f"run.name=overlap-r{ratio}-k{staleness}",
            f"run.output_dir={tmp / 'runs'}",
            f"run.num_steps={warm + args.steps}",
            "run.progress_bar=false",
            "run.log_samples=0",
            f"model.policy={tmp / 'model'}",  # never loaded by the simulated roles
            f"data.prompts={tmp / 'prompts.jsonl'}",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",  # unused
            f"rollout.num_workers={args.workers}",
            f"rollout.prompts_per_step={per_step}",
            f"rollout.chunk_size={args.chunk_size}",
            f"rollout.max_staleness={staleness}",
            "rollout.max_prompt_tokens=64",
            f"learner.minibatch_size={args.chunk_size}",
            f"learner.micro_batch_size={args.chunk_size}",
            *(f"{role}.num_cpus=0.05" for role in ("rollout", "reward", "reference", "learner")),
        ],
    )
    trainer = OnlineTrainer(cfg, roles=ROLES)
    try:
        trainer.run()
    finally:
        trainer.shutdown()
    rows = read_metrics(trainer.run_dir)
    stamps = [r["time"] for r in rows[warm - 1 :]]
    period = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    generate, train = args.generate_s, args.generate_s / ratio
    bound = max(generate, train)
    timed = rows[warm:]
    return {
        "ratio": ratio,
        "staleness": staleness,
        "generate_s": generate,
        "train_s": train,
        "step_s": period,
        "vs_max": period / bound,
        "vs_sum": period / (generate + train),
        "wait_rollouts_s": statistics.fmean(r.get("time/wait_rollouts", 0.0) for r in timed),
        "weight_sync_s": statistics.fmean(r["time/weight_sync"] for r in timed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--generate-s", type=float, default=1.0, help="generation per step")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunks-per-worker", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps after the warm-up")
    parser.add_argument("--weights-mb", type=float, default=50.0)
    parser.add_argument("--response-tokens", type=int, default=128)
    args = parser.parse_args()
    latency = args.generate_s / args.chunks_per_worker
    rows: list[dict[str, Any]] = []
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "model").mkdir()
        write_prompts(tmp / "prompts.jsonl")
        for ratio in args.ratios:
            # The roles read their settings at start from the environment Ray's workers
            # inherit: one Ray per training time.
            SimSettings(
                latency, args.response_tokens, args.weights_mb, args.generate_s / ratio
            ).export()
            ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
            try:
                for k in args.staleness:
                    rows.append(measure(args, tmp, ratio, k))
                    print(f"[async_overlap] {rows[-1]}", file=sys.stderr)
            finally:
                ray.shutdown()
    head = ("gen/train", "k", "gen s", "train s", "step s", "÷max", "÷sum")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (9, 2, 6, 7, 7, 6, 6), strict=True)))
    for r in rows:
        print(
            f"{r['ratio']:>9.2f} {r['staleness']:>2} {r['generate_s']:>6.2f} {r['train_s']:>7.2f} "
            f"{r['step_s']:>7.3f} {r['vs_max']:>6.3f} {r['vs_sum']:>6.3f}"
        )
    worst = max((r["vs_max"] for r in rows if r["staleness"] == 1), default=None)
    print(
        json.dumps(
            {
                "benchmark": "async_overlap",
                "generation": "simulated",
                "rows": rows,
                "worst_vs_max_staleness_1": worst,
                "goal_vs_max_staleness_1": 1.15,
            }
        )
    )


if __name__ == "__main__":
    main()
