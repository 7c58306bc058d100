"""TRL's GRPOTrainer against rayrlhf GRPO and PPO, side by side in one invocation.

    .venv/bin/python benchmarks/vs_trl.py [--model tiny|smollm2] [--steps N] [--completions 16]
        [--group-size G] [--only trl|grpo|grpo_async|ppo ...]

``--model tiny`` (the default): a tiny GPT-2 folder (4×128, random), reward
``rayrlhf.rewards.rules:target_word_frequency``, 20 steps of 16 completions in groups of 8, up to
32 new tokens, temperature 1, lr 1e-3. ``--model smollm2``: the review demo's GRPO shapes
(``launch/configs/review_grpo.yaml``) on SmolLM2-135M-Instruct and the demo's review openings,
continued as plain text (no chat template, on either side), reward
``rayrlhf.rewards.sentiment:vader_positive``, 10 steps of 4 prompts × 4 = 16 completions, up to 24
new tokens, temperature 0.7, lr 1e-5, KL coefficient 0.05. Any of these can be set by flag.

Both sides get the same model folder, reward function, completions per step, group size, maximum
new tokens, temperature, learning rate, KL coefficient and number of steps, and make one optimizer
step of all the step's completions. rayrlhf's step size counts prompts
(``rollout.prompts_per_step``); a step trains on prompts × ``group_size`` completions (PPO: one
completion for each of 16 prompts). ``grpo_async`` is GRPO with ``rollout.max_staleness=1``: the
next step generates while this one trains.

TRL is no dependency of rayrlhf: its run happens in a virtual environment of its own
(``~/.cache/rayrlhf/trl-venv``: ``trl==1.16.0`` beside the CPU torch wheel), made here when
missing. Prints one JSON line: samples/s of each (first step excluded), their ratios, and the
first and last mean reward (means of the first and last three steps). Never fails on a time.
Figures count only from a quiet machine: beside other load TRL's rate collapses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache/rayrlhf"  # launch/setup.sh --demo's models and data
TRL_VENV = Path(os.environ.get("RAYRLHF_TRL_VENV", CACHE / "trl-venv"))
# torch pinned: the CPU wheel, not a CUDA build. vaderSentiment: the SmolLM2 mode's reward
# (rayrlhf.rewards.sentiment) needs it on the TRL side too, at the version rayrlhf's venv has.
TRL_PINS = ("torch==2.13.0", "trl==1.16.0", "vaderSentiment==3.3.2")


def ensure_trl() -> Path:
    """TRL's venv python, installing it the first time (a few minutes)."""
    python = TRL_VENV / "bin" / "python"
    check = "import trl, vaderSentiment; assert trl.__version__ == '1.16.0'"
    probe = [str(python), "-c", check]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"[vs_trl] installing {' '.join(TRL_PINS)} into {TRL_VENV}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *TRL_PINS], check=True)
    return python


# Each mode's defaults; a flag given on the command line wins. smollm2 is review_grpo.yaml's GRPO
# stage with lr cut to 1e-5 (the demo's 1e-4 is PPO's; one value serves both trainers).
PRESETS: dict[str, dict] = {
    "tiny": {
        "label": "gpt2 4x128",
        "reward": "rayrlhf.rewards.rules:target_word_frequency",
        "steps": 20,
        "group_size": 8,
        "max_new_tokens": 32,
        "temperature": 1.0,
        "lr": 1e-3,
        "kl_coef": 0.04,
    },
    "smollm2": {
        "label": "smollm2-135m",
        # VADER sentiment: a rule on the text that varies across continuations of review openings,
        # where the tiny mode's "good" frequency would be 0 for nearly every sample.
        "reward": "rayrlhf.rewards.sentiment:vader_positive",
        "steps": 10,
        "group_size": 4,
        "max_new_tokens": 24,
        "temperature": 0.7,
        "lr": 1e-5,
        "kl_coef": 0.05,
        "model_dir": CACHE / "models/smollm2-135m-instruct",
        "prompts": CACHE / "data/reviews/prompts_train.jsonl",
        # the demo's: openings continued as text, as the SFT stage trained them
        "overrides": ["rollout.template=plain", "rollout.max_prompt_tokens=32"],
    },
}


def rate(samples_per_step: int, seconds: list[float]) -> float:
    """Samples per second over the steps after the first."""
    return samples_per_step * len(seconds[1:]) / sum(seconds[1:])


def first_last(rewards: list[float]) -> tuple[float, float]:
    """Mean reward of the first three and of the last three steps."""
    return statistics.fmean(rewards[:3]), statistics.fmean(rewards[-3:])


def run_trl(args: argparse.Namespace, model: Path, prompts: Path, tmp: Path) -> dict:
    """TRL GRPOTrainer's step times and mean rewards, from its own venv."""
    out = tmp / "trl.json"
    cmd = [str(ensure_trl()), str(HERE / "trl_grpo.py"), "--model", str(model)]
    cmd += ["--prompts", str(prompts), "--out", str(out), "--steps", str(args.steps)]
    cmd += ["--completions", str(args.completions), "--group-size", str(args.group_size)]
    cmd += ["--max-new-tokens", str(args.max_new_tokens), "--seed", "0"]
    cmd += ["--temperature", str(args.temperature), "--lr", str(args.lr)]
    cmd += ["--kl-coef", str(args.kl_coef), "--reward", args.reward]
    subprocess.run(cmd, check=True, stdout=sys.stderr, env={**os.environ, "PYTHONPATH": ""})
    r = json.loads(out.read_text())
    ends = [r["start"], *r["ends"]]
    return {
        "seconds": [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)],
        "rewards": r["rewards"],
    }


def run_rayrlhf(args: argparse.Namespace, model: Path, prompts: Path, tmp: Path, algo: str) -> dict:
    """rayrlhf's step times, mean rewards and phase times for ``algo`` (grpo, grpo_async, ppo)."""
    from rayrlhf.config import load
    from rayrlhf.loops.online import OnlineTrainer

    # grpo_async: GRPO with generation one step ahead of training (rollout.max_staleness=1).
    staleness = 1 if algo.endswith("_async") else 0
    algo_name = algo.removesuffix("_async")
    group = args.group_size if algo_name != "ppo" else 1
    cfg = load(
        None,
        [
            f"model.policy={model}",
            f"data.prompts={prompts}",
            f"reward.function={args.reward}",
            f"run.output_dir={tmp}",
            f"run.name={algo}",
            "run.progress_bar=false",
            "run.log_samples=0",
            f"run.num_steps={args.steps}",
            f"algorithm.name={algo_name}",
            f"rollout.max_staleness={staleness}",
            f"rollout.prompts_per_step={args.completions // group}",
            f"rollout.group_size={group}",
            f"rollout.chunk_size={args.completions // group}",  # one generate call a step
            f"rollout.max_new_tokens={args.max_new_tokens}",
            f"rollout.temperature={args.temperature}",
            # fairness with TRL's one process: one rollout worker, one fp32 learner rank, and one
            # optimizer step of all the step's completions (TRL: batch 16, no accumulation)
            "rollout.num_workers=1",
            "learner.num_ranks=1",
            "learner.precision=fp32",
            "learner.gradient_checkpointing=false",  # trl_grpo.py turns TRL's default off too
            "learner.ppo_epochs=1",
            f"learner.minibatch_size={args.completions}",
            f"learner.micro_batch_size={args.completions}",
            f"learner.policy_lr={args.lr}",
            f"learner.value_lr={args.lr}",
            f"online.kl_coef={args.kl_coef}",
            *[f"{role}.num_cpus=2" for role in ("rollout", "reward", "reference", "learner")],
            *PRESETS[args.model].get("overrides", []),
            *args.overrides,
        ],
    )
    with contextlib.redirect_stdout(sys.stderr):
        trainer = OnlineTrainer(cfg)
        try:
            history = trainer.run()
        finally:
            trainer.shutdown()
    return {
        "seconds": [m["time/step"] for m in history],
        "rewards": [m["reward/mean"] for m in history],
        "phases": {
            k: round(statistics.fmean(m[k] for m in history[1:]), 4)
            for k in history[-1]
            if k.startswith("time/") and k != "time/step"
        },
    }


def parse_args() -> argparse.Namespace:
    """The command line, with the chosen mode's defaults filled in where no flag was given."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=tuple(PRESETS), default="tiny")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--completions", type=int, default=16, help="completions per step")
    ap.add_argument("--group-size", type=int)
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--kl-coef", type=float)
    ap.add_argument("--reward", help="MODULE:NAME of a pure-Python rayrlhf.rewards function")
    ap.add_argument("--only", choices=("trl", "grpo", "grpo_async", "ppo"), action="append")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    for key, value in PRESETS[args.model].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def make_inputs(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    """The model folder and prompts file of the chosen mode (the tiny ones are written to tmp)."""
    if args.model != "tiny":
        return Path(args.model_dir), Path(args.prompts)
    from rayrlhf.tiny_models import WORDS, save_tiny

    model = save_tiny(tmp / "model", layers=4, hidden=128)
    prompts = tmp / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": " ".join(WORDS[i : i + 3])}) + "\n" for i in range(20))
    )
    return model, prompts


def main() -> None:
    """Run each trainer in turn and print the JSON line."""
    args = parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.redirect_stdout(sys.stderr):  # importing deepspeed logs to stdout
            model, prompts = make_inputs(args, tmp)
        for name in args.only or ("trl", "grpo", "grpo_async", "ppo"):
            if name == "trl":
                runs["trl_grpo"] = run_trl(args, model, prompts, tmp)
            else:
                runs[f"rayrlhf_{name}"] = run_rayrlhf(args, model, prompts, tmp, name)
    out: dict = {
        "benchmark": "vs_trl",
        "mode": args.model,
        "model": args.label,
        "reward": args.reward,
        "steps": args.steps,
        "completions_per_step": args.completions,
        "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "lr": args.lr,
        "kl_coef": args.kl_coef,
    }
    for name, r in runs.items():
        first, last = first_last(r["rewards"])
        out[name] = {
            "samples_per_s": round(rate(args.completions, r["seconds"]), 2),
            "first_step_s": round(r["seconds"][0], 2),
            "reward_first": round(first, 4),
            "reward_last": round(last, 4),
            **({"phases_s": r["phases"]} if "phases" in r else {}),
        }
    if "trl_grpo" in out:
        for name in ("rayrlhf_grpo", "rayrlhf_grpo_async", "rayrlhf_ppo"):
            if name in out:
                ratio = out[name]["samples_per_s"] / out["trl_grpo"]["samples_per_s"]
                out[f"ratio_{name.removeprefix('rayrlhf_')}_vs_trl"] = round(ratio, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
