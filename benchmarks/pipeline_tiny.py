"""The whole pipeline (SFT → reward model → PPO) on a tiny random model; prints stage times.

    .venv/bin/python benchmarks/pipeline_tiny.py [--gpu] [--layers 4 --hidden 128] [--set k=v ...]

A smoke run of every stage on any machine in about a minute: synthetic SFT rows, preference
pairs ("good" beats "bad") and prompts. ``--gpu`` puts every role and learner on CUDA (bf16,
nccl), sharing one GPU in fractions. Prints one JSON line: seconds per stage, the reward model's
held-out accuracy, held-out reward before/after PPO, and PPO throughput.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from rayrlhf.config import load
from rayrlhf.loops.pipeline import run_pipeline
from rayrlhf.metrics import read_metrics
from rayrlhf.tiny_models import WORDS, save_smollm2_shaped, save_tiny

GPU = [
    *(f"{role}.num_gpus=0.2" for role in ("rollout", "reward", "reference", "learner")),
    "learner.device=cuda",
    "learner.precision=bf16",
    *(
        f"{stage}.learner.{key}"
        for stage in ("sft", "reward_model")
        for key in ("device=cuda", "num_gpus=0.2", "precision=bf16")
    ),
]


def write_data(folder: Path, seed: int = 0) -> dict[str, Path]:
    """SFT rows, preference pairs and prompts over the tiny tokenizer's words."""
    rnd = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rnd.choice(WORDS[2:12]) for _ in range(k))

    files = {
        "sft": [{"prompt": words(3), "response": " good " + words(2)} for _ in range(128)],
        "pairs": [
            {"prompt": words(2), "chosen": words(2) + " good", "rejected": words(2) + " bad"}
            for _ in range(256)
        ],
        "prompts": [{"prompt": words(3)} for _ in range(64)],
    }
    paths = {}
    for name, rows in files.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="every role on CUDA, bf16")
    parser.add_argument(
        "--smollm2-shape", action="store_true", help="a random Llama of SmolLM2-135M's shape"
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = (
            save_smollm2_shaped(folder / "model")
            if args.smollm2_shape
            else save_tiny(folder / "model", layers=args.layers, hidden=args.hidden)
        )
        data = write_data(folder)
        config = load(
            None,
            [
                f"run.output_dir={folder / 'runs'}",
                "run.name=tiny",
                "run.progress_bar=false",
                "run.num_steps=6",
                "run.log_samples=0",
                f"model.policy={model}",
                f"data.prompts={data['prompts']}",
                f"eval.prompts.path={data['prompts']}",
                "rollout.prompts_per_step=32",
                "rollout.max_new_tokens=8",
                "learner.minibatch_size=16",
                "learner.policy_lr=1e-3",
                "learner.value_lr=1e-3",
                f"sft.data.path={data['sft']}",
                "rollout.template=plain",
                "sft.lr=1e-3",
                f"reward_model.model={model}",
                f"reward_model.data.path={data['pairs']}",
                "reward_model.heldout_fraction=0.2",
                "reward_model.lr=3e-3",
                "reward_model.learner.minibatch_size=16",
                *(GPU if args.gpu else []),
                *args.overrides,
            ],
        )
        start = time.perf_counter()
        summaries = run_pipeline(config)
        total = time.perf_counter() - start
        run = folder / "runs" / "tiny"
        seconds = {
            stage: json.loads((run / stage / "done.json").read_text())["seconds"]
            for stage in summaries
        }
        ppo = read_metrics(run / "ppo")
        steady = ppo[1:] or ppo
        evals = summaries["ppo"]["eval"]
        print(
            json.dumps(
                {
                    "device": "cuda" if args.gpu else "cpu",
                    "model": "llama smollm2-135m shape"
                    if args.smollm2_shape
                    else f"gpt2 {args.layers}x{args.hidden}",
                    "seconds": {**seconds, "total": total},
                    "rm_heldout_accuracy": summaries["reward_model"]["eval/accuracy"],
                    "sft_heldout_loss": [
                        summaries["sft"]["eval/loss_before"],
                        summaries["sft"]["eval/loss"],
                    ],
                    "ppo_heldout_reward": [
                        evals["before"]["reward/mean"],
                        evals["after"]["reward/mean"],
                    ],
                    "ppo_tokens_per_s": sum(m["throughput/tokens_per_s"] for m in steady)
                    / len(steady),
                    "ppo_step_s": sum(m["time/step"] for m in steady) / len(steady),
                }
            )
        )


if __name__ == "__main__":
    main()
