"""A real tiny run, synchronous vs asynchronous, same samples: reward curves and step times.

    .venv/bin/python benchmarks/async_tiny.py [--staleness 0 1 2] [--seeds 0 1] [--steps 16]

PPO's learning setup from the tests (the tiny GPT-2, reward = frequency of "good", 16 steps of
32 prompts) with ``rollout.max_staleness`` 0 (synchronous), 1 and 2, for each seed. Every run
trains on the same number of samples; the asynchronous ones on samples up to k versions old,
corrected by decoupled PPO's truncated behaviour weights. "Within noise" is judged against the
spread between seeds of the synchronous run. Prints a table of mean rewards (first 3 and last 3
steps) and step times, then one JSON line with the curves. Never fails on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

PROMPTS = ["the movie was very", "a film is", "the plot", "this story was", "the actor is"]


def run(tmp: Path, model: Path, prompts: Path, staleness: int, seed: int, steps: int) -> dict:
    from rayrlhf.config import load
    from rayrlhf.loops.ppo import PPOTrainer

    cfg = load(
        None,
        [
            f"model.policy={model}",
            f"data.prompts={prompts}",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
            f"run.output_dir={tmp}",
            f"run.name=k{staleness}-s{seed}",
            f"run.seed={seed}",
            "run.progress_bar=false",
            "run.log_samples=0",
            f"run.num_steps={steps}",
            f"rollout.max_staleness={staleness}",
            "rollout.max_new_tokens=8",
            "rollout.prompts_per_step=32",
            "rollout.chunk_size=8",
            "learner.minibatch_size=16",
            "learner.micro_batch_size=16",
            "learner.ppo_epochs=2",
            "learner.policy_lr=1e-3",
            "learner.value_lr=1e-3",
            "ppo.kl_coef=0.01",
        ],
    )
    with contextlib.redirect_stdout(sys.stderr):
        trainer = PPOTrainer(cfg)
        try:
            history = trainer.run()
        finally:
            trainer.shutdown()
    rewards = [m["reward/mean"] for m in history]
    return {
        "staleness": staleness,
        "seed": seed,
        "rewards": rewards,
        "first": statistics.fmean(rewards[:3]),
        "last": statistics.fmean(rewards[-3:]),
        "step_s": statistics.fmean(m["time/step"] for m in history[1:]),
        "samples": sum(m["samples"] for m in history),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()
    import ray

    from rayrlhf.tiny_models import save_tiny

    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        model = save_tiny(tmp / "model")
        prompts = tmp / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
        with contextlib.redirect_stdout(sys.stderr):
            ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False)
        try:
            for k in args.staleness:
                for seed in args.seeds:
                    rows.append(run(tmp, model, prompts, k, seed, args.steps))
                    print(
                        f"[async_tiny] k={k} seed={seed} last={rows[-1]['last']:.3f}",
                        file=sys.stderr,
                    )
        finally:
            ray.shutdown()
    print(f"{'k':>2} {'seed':>4} {'first':>6} {'last':>6} {'step s':>7} {'samples':>7}")
    for r in rows:
        print(
            f"{r['staleness']:>2} {r['seed']:>4} {r['first']:>6.3f} {r['last']:>6.3f} "
            f"{r['step_s']:>7.3f} {r['samples']:>7}"
        )
    summary = {}
    for k in args.staleness:
        lasts = [r["last"] for r in rows if r["staleness"] == k]
        steps = [r["step_s"] for r in rows if r["staleness"] == k]
        summary[f"k{k}"] = {
            "last_mean": statistics.fmean(lasts),
            "last_spread": max(lasts) - min(lasts),
            "step_s": statistics.fmean(steps),
        }
    print(json.dumps({"benchmark": "async_tiny", "summary": summary, "runs": rows}))


if __name__ == "__main__":
    main()
