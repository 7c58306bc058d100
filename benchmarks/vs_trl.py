"""TRL's GRPOTrainer against rayrlhf GRPO and PPO, side by side in one invocation.

    .venv/bin/python benchmarks/vs_trl.py [--steps 20] [--completions 16] [--group-size 8]
        [--only trl|grpo|grpo_async|ppo ...]

Same tiny model folder (GPT-2 4×128, random), same reward function
(``rayrlhf.rewards.rules:target_word_frequency``), same completions per step, group size,
maximum new tokens, temperature, learning rate and KL coefficient, same number of steps.
rayrlhf's step size counts prompts (``rollout.prompts_per_step``); a step trains on
prompts × ``group_size`` completions, so 16 completions in groups of 8 are 2 prompts a step (PPO:
16 prompts, one completion each). ``grpo_async`` is GRPO with ``rollout.max_staleness=1``: the
next step generates while this one trains.

TRL is no dependency of rayrlhf: its run happens in a virtual environment of its own
(``~/.cache/rayrlhf/trl-venv``: ``trl==1.16.0`` beside the CPU torch wheel), made here when
missing. Prints one JSON line: samples/s of each (first step excluded), their ratios, and the
first and last mean reward (means of the first and last three steps). Never fails on a time.
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
TRL_VENV = Path(os.environ.get("RAYRLHF_TRL_VENV", Path.home() / ".cache/rayrlhf/trl-venv"))
TRL_PINS = ("torch==2.13.0", "trl==1.16.0")  # torch pinned: the CPU wheel, not a CUDA build


def ensure_trl() -> Path:
    """TRL's venv python, installing it the first time (a few minutes)."""
    python = TRL_VENV / "bin" / "python"
    probe = [str(python), "-c", "import trl; assert trl.__version__ == '1.16.0'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"[vs_trl] installing {' '.join(TRL_PINS)} into {TRL_VENV}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *TRL_PINS], check=True)
    return python


def rate(samples_per_step: int, seconds: list[float]) -> float:
    """Samples per second over the steps after the first."""
    return samples_per_step * len(seconds[1:]) / sum(seconds[1:])


def first_last(rewards: list[float]) -> tuple[float, float]:
    """Mean reward of the first three and of the last three steps."""
    return statistics.fmean(rewards[:3]), statistics.fmean(rewards[-3:])


def run_trl(args: argparse.Namespace, model: Path, prompts: Path, tmp: Path) -> dict:
    out = tmp / "trl.json"
    cmd = [str(ensure_trl()), str(HERE / "trl_grpo.py"), "--model", str(model)]
    cmd += ["--prompts", str(prompts), "--out", str(out), "--steps", str(args.steps)]
    cmd += ["--completions", str(args.completions), "--group-size", str(args.group_size)]
    cmd += ["--max-new-tokens", str(args.max_new_tokens), "--seed", "0"]
    cmd += ["--temperature", str(args.temperature), "--lr", str(args.lr)]
    cmd += ["--kl-coef", str(args.kl_coef)]
    subprocess.run(cmd, check=True, stdout=sys.stderr, env={**os.environ, "PYTHONPATH": ""})
    r = json.loads(out.read_text())
    ends = [r["start"], *r["ends"]]
    return {
        "seconds": [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)],
        "rewards": r["rewards"],
    }


def run_rayrlhf(args: argparse.Namespace, model: Path, prompts: Path, tmp: Path, algo: str):
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
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
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
            f"learner.minibatch_size={args.completions}",
            f"learner.micro_batch_size={args.completions}",
            f"learner.policy_lr={args.lr}",
            f"learner.value_lr={args.lr}",
            f"online.kl_coef={args.kl_coef}",
            *[f"{role}.num_cpus=2" for role in ("rollout", "reward", "reference", "learner")],
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--completions", type=int, default=16, help="completions per step")
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl-coef", type=float, default=0.04)
    ap.add_argument("--only", choices=("trl", "grpo", "grpo_async", "ppo"), action="append")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from rayrlhf.tiny_models import WORDS, save_tiny

    runs = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = save_tiny(tmp / "model", layers=4, hidden=128)
        prompts = tmp / "prompts.jsonl"
        prompts.write_text(
            "".join(json.dumps({"prompt": " ".join(WORDS[i : i + 3])}) + "\n" for i in range(20))
        )
        for name in args.only or ("trl", "grpo", "grpo_async", "ppo"):
            if name == "trl":
                runs["trl_grpo"] = run_trl(args, model, prompts, tmp)
            else:
                runs[f"rayrlhf_{name}"] = run_rayrlhf(args, model, prompts, tmp, name)
    out: dict = {
        "benchmark": "vs_trl",
        "steps": args.steps,
        "completions_per_step": args.completions,
        "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens,
        "model": "gpt2 4x128",
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
