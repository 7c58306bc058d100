"""The README pipeline's PPO stage with ``rollout.backend`` hf and vllm, side by side.

    .venv/bin/python benchmarks/ppo_backends.py [--config launch/configs/review_pipeline.yaml]
        [--run runs/review-rlhf] [--steps 5] [--rounds 2]

Reuses a finished pipeline run's SFT and reward models (the README's main command makes them;
the vLLM runs need ``launch/setup.sh --vllm``). Runs ``--steps`` PPO steps of ``--config``'s
PPO stage with each backend, in the order hf, vllm, hf, vllm, ... for ``--rounds``, each
run in a fresh process (vLLM binds its threads for good), so a slow spell of this noisy host
falls on both. Reported per backend: the median over every step but each run's first (the
first optimizer step, an engine's first call) of ``time/step`` and of each phase, and the
steps' mean response length (the learner's work grows with it). Stdout: a table, then one JSON
line. It never fails on a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PHASES = ("generate", "score", "reference", "values", "train", "weight_sync", "step")


def one(config: Path, run: Path, backend: str, steps: int) -> list[dict]:
    """``steps`` PPO steps of ``config``'s PPO stage on ``run``'s SFT and reward models with
    ``backend``, in this process: their metrics rows."""
    from rayrlhf.config import from_dict, load, to_dict
    from rayrlhf.loops.online import OnlineTrainer
    from rayrlhf.loops.pipeline import third_stage_config
    from rayrlhf.metrics import read_metrics

    tree = to_dict(third_stage_config(load(config), run))
    out = Path(tempfile.mkdtemp())
    tree["run"].update(num_steps=steps, output_dir=str(out), progress_bar=False, resume="never")
    tree["rollout"]["backend"] = backend
    trainer = OnlineTrainer(from_dict(tree), run_dir=out / "ppo")
    try:
        trainer.run()
    finally:
        trainer.shutdown()
    return read_metrics(out / "ppo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("launch/configs/review_pipeline.yaml"))
    parser.add_argument("--run", type=Path, default=Path("runs/review-rlhf"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", choices=("hf", "vllm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.config, args.run, args.one, args.steps)))
        return
    for stage in ("sft", "reward_model"):
        if not (args.run / stage / "done.json").exists():
            sys.exit(f"{args.run}/{stage} is not finished: run the README's main command first")
    rows: dict[str, list[dict]] = {"hf": [], "vllm": []}
    for _ in range(args.rounds):
        for backend in rows:
            cmd = [sys.executable, __file__, "--config", str(args.config), "--run", str(args.run)]
            cmd += ["--steps", str(args.steps), "--one", backend]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{backend} run failed:\n{proc.stderr[-3000:]}")
            rows[backend] += json.loads(proc.stdout.strip().splitlines()[-1])[1:]
    result: dict = {"steps_per_run": args.steps, "rounds": args.rounds}
    for backend, steps in rows.items():
        result[backend] = {
            phase: round(statistics.median(r[f"time/{phase}"] for r in steps), 3)
            for phase in PHASES
        }
        result[backend]["response_length"] = round(
            statistics.mean(r["response/length"] for r in steps), 2
        )
        result[backend]["steps_timed"] = len(steps)
    result["step_speedup"] = round(result["hf"]["step"] / result["vllm"]["step"], 3)
    print(f"{'phase (median s)':<20}{'hf':>10}{'vllm':>10}")
    for key in (*PHASES, "response_length"):
        print(f"{key:<20}{result['hf'][key]:>10}{result['vllm'][key]:>10}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
