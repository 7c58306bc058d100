"""A tiny PPO run while a random rollout, reward or reference actor's process is SIGKILLed every
few seconds; then the same config without kills. Prints one JSON line.

    .venv/bin/python benchmarks/chaos.py [--steps 120] [--kill-every 4] [--seed 0]

Figures: steps, kills sent, worker restarts and chunks dispatched again (as the run counted
them), samples trained, samples lost (sample ids of the run's steps never trained), samples
duplicated (samples the learners trained minus distinct ids), and whether the final parameters
and optimizer state equal those of the clean run (sha256 of their bytes). A benchmark prints
figures; it never fails on a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray
from run_figures import run_trainer, sample_figures

from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.tiny_models import WORDS, save_tiny

ROLES = ("rollout", "reward", "reference")


def _config(folder: Path, name: str, args: argparse.Namespace) -> list[str]:
    return [
        f"model.policy={folder / 'model'}",
        f"data.prompts={folder / 'prompts.jsonl'}",
        "reward.function=rayrlhf.rewards.rules:target_word_frequency",
        f"run.output_dir={folder / 'runs'}",
        f"run.name={name}",
        f"run.num_steps={args.steps}",
        f"run.seed={args.seed}",
        "run.progress_bar=false",
        "run.log_samples=0",
        "run.max_worker_restarts=100000",
        "rollout.num_workers=2",
        "reward.num_workers=2",
        "reference.num_workers=2",
        "rollout.prompts_per_step=16",
        "rollout.chunk_size=2",
        "rollout.max_new_tokens=12",
        "learner.minibatch_size=8",
        "learner.micro_batch_size=4",
        "learner.policy_lr=1e-3",
        "learner.value_lr=1e-3",
        "timeouts.rollout_s=60",
    ]


class Killer(threading.Thread):
    """Every ``every`` seconds, SIGKILL the process of a random live role actor of the run."""

    def __init__(self, trainer: OnlineTrainer, every: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.trainer, self.every, self.rng = trainer, every, random.Random(seed)
        self.kills: list[str] = []
        self.stop = threading.Event()

    def _pids(self) -> dict[str, int]:
        from ray.util.state import list_actors

        prefix = f"{self.trainer.config.run.name}-"
        for _ in range(5):  # the state API sometimes answers nothing under load: ask again
            try:
                actors = list_actors(filters=[("state", "=", "ALIVE")], limit=10000)
                break
            except Exception:
                time.sleep(1)
        else:
            return {}
        return {
            a.name: a.pid
            for a in actors
            if a.name and a.name.startswith(prefix) and a.name.split("/")[-1].split("-")[0] in ROLES
        }

    def run(self) -> None:
        while not self.stop.wait(self.every):
            pids = self._pids()
            roles = sorted({n.split("/")[-1].split("-")[0] for n in pids})
            if not roles:
                continue
            role = self.rng.choice(roles)  # a role first, so each is hit about as often
            name = self.rng.choice(sorted(n for n in pids if f"/{role}-" in n))
            try:
                os.kill(pids[name], signal.SIGKILL)
                self.kills.append(name.split("/")[-1])
            except ProcessLookupError:
                pass


def _run(overrides: list[str], killer_every: float | None, seed: int) -> dict:
    killers: list[Killer] = []

    def start_killer(trainer: OnlineTrainer) -> None:
        killers.append(Killer(trainer, killer_every, seed))
        killers[0].start()

    run = run_trainer(overrides, start_killer if killer_every else None)
    for killer in killers:  # the run has finished: no more kills
        killer.stop.set()
        killer.join()
    return {**run, "kills": killers[0].kills if killers else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_tiny(folder / "model")
        rnd = random.Random(args.seed)
        prompts = [" ".join(rnd.choice(WORDS[2:12]) for _ in range(3)) for _ in range(64)]
        rows = "".join(json.dumps({"prompt": p}) + "\n" for p in prompts)
        (folder / "prompts.jsonl").write_text(rows)
        chaos = _run(_config(folder, "chaos", args), args.kill_every, args.seed)
        clean = _run(_config(folder, "clean", args), None, args.seed)
    last = chaos["rows"][-1]
    report = {
        "steps": len(chaos["rows"]),
        "kills": len(chaos["kills"]),
        "kills_by_role": {r: sum(k.startswith(r) for k in chaos["kills"]) for r in ROLES},
        "worker_restarts": int(last["faults/worker_restarts"]),
        "redispatched_chunks": int(last["faults/redispatched_chunks"]),
        **sample_figures(chaos, clean, args.steps, 16),
        "seconds_chaos": chaos["seconds"],
        "seconds_clean": clean["seconds"],
    }
    print(json.dumps(report))
    sys.stdout.flush()
    ray.shutdown()


if __name__ == "__main__":
    main()
