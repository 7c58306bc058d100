"""Control-plane scaling with SIMULATED generation: samples/s for 1 … 32 rollout workers.

    .venv/bin/python benchmarks/control_plane.py [--workers 1 2 4 8 16 32] [--latency 0.5]
        [--chunks-per-worker 4] [--chunk-size 8] [--steps 3] [--weights-mb 50]
        [--response-tokens 128] [--png /tmp/control_plane.png]
        [--set reward.num_workers=4 ...]

Generation is NOT real: each rollout worker sleeps a fixed ``--latency`` per chunk and returns
random tokens of realistic shapes (``benchmarks/simulated_roles.py``); reward and reference answer
at once and the learner trains on nothing. What runs for real is the control plane: the PPO driver
(``OnlineTrainer.run`` and ``train_step``), the actor groups and placement groups, the experience
buffer and ledger, the object-store transfers (every rollout, score and reference chunk to the
learner, the ``--weights-mb`` state dict to every rollout worker) and the per-step logging.

Weak scaling: with R rollout workers a step has R × chunks-per-worker chunks, so each worker
generates for chunks-per-worker × latency seconds per step whatever R is. Perfect scaling keeps
the step time constant and samples/s linear in R; the fixed per-step costs that grow with R
(driver submission, learner fetch, weight sync to R workers) are what bend it. Efficiency is
samples/s over R × (samples/s at the smallest R); the target is ≥ 0.8 up to 32 workers.

``--set`` passes config overrides on, as ppo_step.py does; only
``weight_sync.method=object_store`` is simulated (the roles have no broadcast methods).
The table, PNG and bottleneck verdict are made by ``control_plane_report.py``.

Stdout: a table, then one JSON line. The trainer's console lines go to stderr. One local Ray
(started here with enough logical CPUs) serves every worker count; each trainer is shut down
before the next. A benchmark prints figures; it never fails on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import simulated_roles  # benchmarks/ is sys.path[0] when this file runs as a script
from control_plane_report import bottleneck, plot, print_table
from ray import cloudpickle
from simulated_roles import (
    SimLearner,
    SimReferenceWorker,
    SimRewardWorker,
    SimRolloutWorker,
    SimSettings,
)

from rayrlhf.config import Config, load
from rayrlhf.loops.online import OnlineTrainer, Roles
from rayrlhf.metrics import read_metrics

# The actor classes travel by value: worker processes need not find benchmarks/ on their path.
cloudpickle.register_pickle_by_value(simulated_roles)

ROLES = Roles(
    rollout=SimRolloutWorker,
    reward=SimRewardWorker,
    reference=SimReferenceWorker,
    learner=SimLearner,
)
ACTOR_CPUS = 0.05  # logical CPUs per simulated actor: 32 sleeping workers share two cores
PROMPT_WORDS = "the film was a quiet study of grief and memory set in a coastal town".split()


def make_config(
    args: argparse.Namespace, workers: int, tmp: Path, model_dir: Path, prompts: Path
) -> Config:
    """The config of one weak-scaling point: ``workers`` rollout workers, 1 of every other role."""
    per_step = workers * args.chunks_per_worker * args.chunk_size
    cfg = load(
        None,
        [
            f"run.name=control-plane-r{workers}",
            f"run.output_dir={tmp / 'runs'}",
            f"run.num_steps={1 + args.steps}",
            "run.progress_bar=false",
            "run.log_samples=0",
            f"model.policy={model_dir}",  # never loaded by the simulated roles
            f"data.prompts={prompts}",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",  # unused (simulated)
            f"rollout.num_workers={workers}",
            f"rollout.prompts_per_step={per_step}",
            f"rollout.chunk_size={args.chunk_size}",
            "rollout.max_prompt_tokens=64",
            f"learner.minibatch_size={args.chunk_size}",
            f"learner.micro_batch_size={args.chunk_size}",
            *(
                f"{role}.num_cpus={ACTOR_CPUS}"
                for role in ("rollout", "reward", "reference", "learner")
            ),
            *args.overrides,
        ],
    )
    method = getattr(getattr(cfg, "weight_sync", None), "method", "object_store")
    if method != "object_store":
        raise SystemExit(f"weight_sync.method={method} is not simulated (object_store only)")
    return cfg


def write_prompts(path: Path, count: int = 400) -> Path:
    """A JSONL file of ``count`` prompts of roughly 40–60 words (about 64 tokens each)."""
    rows = []
    for i in range(count):
        words = [PROMPT_WORDS[(i + j) % len(PROMPT_WORDS)] for j in range(40 + i % 21)]
        rows.append(json.dumps({"prompt": " ".join(words)}) + "\n")
    path.write_text("".join(rows))
    return path


def instrument(trainer: OnlineTrainer) -> None:
    """Wrap this trainer's ``train_step`` and ``learners.train`` (instance attributes only).

    Adds ``bench/dispatch`` (step start → learner call submitted: the driver's serial submission
    of every chunk's calls) and ``bench/trained`` (step start → the learner's metrics are back)
    to each step's metrics. The wrapped code is the real driver, unchanged.
    """
    step, train = trainer.train_step, trainer.learners.train
    marks: dict[str, float] = {}

    def timed_train(shards: list) -> dict:
        marks["dispatched"] = time.time()
        out = train(shards)
        marks["trained"] = time.time()
        return out

    def timed_step() -> dict[str, Any]:
        t0 = time.time()
        metrics = step()
        metrics["bench/dispatch"] = marks["dispatched"] - t0
        metrics["bench/to_ready"] = metrics["sim/ready_at"] - t0
        metrics["bench/trained"] = marks["trained"] - t0
        return metrics

    trainer.train_step = timed_step  # type: ignore[method-assign]
    trainer.learners.train = timed_train  # type: ignore[method-assign]


def measure(args: argparse.Namespace, workers: int, cfg: Config) -> dict[str, Any]:
    """Start a trainer with ``workers`` simulated rollout workers, run 1 + K steps, shut down."""
    t_start = time.perf_counter()
    trainer = OnlineTrainer(cfg, roles=ROLES)
    startup = time.perf_counter() - t_start  # actor processes keep starting in the background
    instrument(trainer)
    try:
        history = trainer.run(1 + args.steps)
    finally:
        trainer.shutdown()
    rows = read_metrics(trainer.run_dir)
    timed = history[1:]  # the first step (first calls on fresh actors) is the warm-up
    # Step period from the logged timestamps: everything the run loop does, logging included.
    stamps = [r["time"] for r in rows]
    period = (stamps[-1] - stamps[0]) / args.steps
    mean = lambda key: statistics.fmean(m[key] for m in timed)  # noqa: E731
    per_step = cfg.rollout.prompts_per_step
    gen_ideal = args.chunks_per_worker * args.latency
    step_s = mean("time/step")
    trained = mean("bench/trained")
    to_ready = mean("bench/to_ready")
    return {
        "workers": workers,
        "samples_per_step": per_step,
        "samples_per_s": per_step / period,
        "bound_samples_per_s": per_step / gen_ideal,  # generation-latency bound
        "period_s": period,
        "step_s": step_s,
        "startup_s": startup,
        "warmup_step_s": history[0]["time/step"],  # includes the actor processes' start
        "dispatch_s": mean("bench/dispatch"),
        "to_ready_s": to_ready,
        "gen_tail_s": to_ready - gen_ideal,
        "fetch_s": mean("time/fetch"),
        "learn_s": trained - to_ready,
        "weight_sync_s": mean("time/weight_sync"),
        "loop_s": period - step_s,
        "overhead_s": period - gen_ideal,
        "policy_version": int(timed[-1]["policy_version"]),
    }


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start one local Ray, measure every worker count in turn, stop Ray; returns the rows."""
    needed = max(args.workers) * ACTOR_CPUS + 3 * ACTOR_CPUS
    ray.init(
        address="local",
        num_cpus=max(4, int(needed) + 1),
        include_dashboard=False,
        log_to_driver=False,
        namespace="rayrlhf",
    )
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            model_dir = tmp / "model"  # must exist for the config; nothing reads it
            model_dir.mkdir()
            prompts = write_prompts(tmp / "prompts.jsonl")
            for workers in sorted(args.workers):
                cfg = make_config(args, workers, tmp, model_dir, prompts)
                row = measure(args, workers, cfg)
                rows.append(row)
                print(
                    f"[control_plane] R={workers}: {row['samples_per_s']:.1f} samples/s, "
                    f"step {row['period_s']:.3f}s",
                    file=sys.stderr,
                )
    finally:
        ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per chunk")
    parser.add_argument("--chunks-per-worker", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up")
    parser.add_argument("--weights-mb", type=float, default=50.0, help="simulated policy size")
    parser.add_argument("--response-tokens", type=int, default=128)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--png", type=Path, default=Path(tempfile.gettempdir()) / "control_plane.png"
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")

    # Before Ray starts: every worker process inherits these (the roles read them at __init__).
    SimSettings(args.latency, args.response_tokens, args.weights_mb).export()
    # Ray's log monitor prints (e.g. at shutdown) on stdout: stdout carries the table only.
    with contextlib.redirect_stdout(sys.stderr):
        rows = run_all(args)

    base = rows[0]["samples_per_s"] / rows[0]["workers"]
    for row in rows:
        row["linear_samples_per_s"] = base * row["workers"]
        row["efficiency"] = row["samples_per_s"] / row["linear_samples_per_s"]
        row["efficiency_vs_bound"] = row["samples_per_s"] / row["bound_samples_per_s"]
    print_table(rows, args)
    plot(rows, args, args.png)
    verdict = bottleneck(rows, args.chunks_per_worker * args.latency)
    min_eff = min(row["efficiency"] for row in rows)
    print(f"bottleneck: {verdict}")
    print(f"png: {args.png}")
    print(
        json.dumps(
            {
                "benchmark": "control_plane",
                "generation": "simulated",
                "latency_s": args.latency,
                "chunk_size": args.chunk_size,
                "chunks_per_worker": args.chunks_per_worker,
                "response_tokens": args.response_tokens,
                "weights_mb": args.weights_mb,
                "overrides": args.overrides,
                "cpu_cores": os.cpu_count(),
                "steps": args.steps,
                "target_efficiency": 0.8,
                "min_efficiency": round(min_eff, 3),
                "meets_target": min_eff >= 0.8,
                "bottleneck": verdict,
                "png": str(args.png),
                "rows": [
                    {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                    for row in rows
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
