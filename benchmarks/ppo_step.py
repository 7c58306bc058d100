"""K PPO steps on a fixed tiny configuration; prints one JSON line of throughput and phase times.

    .venv/bin/python benchmarks/ppo_step.py --steps 6 [--set learner.zero_stage=3 ...]

The first step (process-group warm-up, first optimizer step) is reported apart and left out of the
means. Phase times are worker busy seconds per step (generate, score, reference) or wall seconds
on the learner / driver (values, train, weight sync). A benchmark prints figures; it never fails
on a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

import ray

from rayrlhf.config import load
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.tiny_models import WORDS, save_tiny

PHASES = ("generate", "score", "reference", "values", "train", "weight_sync")
FIXED = [
    "reward.function=rayrlhf.rewards.rules:target_word_frequency",
    "run.progress_bar=false",
    "run.log_samples=0",
    "rollout.prompts_per_step=32",
    "rollout.chunk_size=8",
    "rollout.max_new_tokens=16",
    "learner.minibatch_size=16",
    "learner.micro_batch_size=8",
    "learner.policy_lr=1e-3",
    "learner.value_lr=1e-3",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny(Path(tmp) / "model", layers=args.layers, hidden=args.hidden)
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text(
            "".join(json.dumps({"prompt": " ".join(WORDS[i : i + 3])}) + "\n" for i in range(20))
        )
        cfg = load(
            None,
            [
                f"model.policy={model}",
                f"data.prompts={prompts}",
                f"run.output_dir={tmp}",
                f"run.num_steps={args.steps}",
                *FIXED,
                *args.overrides,
            ],
        )
        # The per-step console lines go to stderr: stdout carries the one JSON line.
        with contextlib.redirect_stdout(sys.stderr):
            trainer = OnlineTrainer(cfg)
            history = trainer.run()
            trainer.shutdown()
    ray.shutdown()

    steady = history[1:] or history
    mean = lambda key: statistics.fmean(m[key] for m in steady)  # noqa: E731
    print(
        json.dumps(
            {
                "benchmark": "ppo_step",
                "steps": args.steps,
                "model": f"gpt2 {args.layers}x{args.hidden}",
                "rollout_workers": cfg.rollout.num_workers,
                "learner_ranks": cfg.learner.num_ranks,
                "zero_stage": cfg.learner.zero_stage,
                "samples_per_step": cfg.rollout.prompts_per_step,
                "samples_per_s": round(mean("throughput/samples_per_s"), 3),
                "tokens_per_s": round(mean("throughput/tokens_per_s"), 2),
                "step_s": round(mean("time/step"), 3),
                "first_step_s": round(history[0]["time/step"], 3),
                **{f"{p}_s": round(mean(f"time/{p}"), 4) for p in PHASES},
            }
        )
    )


if __name__ == "__main__":
    main()
