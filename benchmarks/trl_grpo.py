"""TRL's GRPOTrainer on a model folder: the TRL half of ``vs_trl.py`` (run in TRL's own venv).

    TRL_VENV/bin/python benchmarks/trl_grpo.py --model DIR --prompts FILE --steps N ...
        --reward rayrlhf.rewards.MODULE:NAME --out F

Writes a JSON file: per step the wall time at its end and the mean reward. It imports from
rayrlhf only the reward function's module (pure Python; ``sentiment`` needs ``vaderSentiment``,
which the TRL venv has, and nothing of rayrlhf's own dependencies), so both trainers score with
the very same code.

Prompts are plain strings, so TRL applies no chat template: in TRL 1.16 ``GRPOTrainer``
renders a chat template only when ``is_conversational`` (a list of role/content messages) and
otherwise tokenizes the text as it is, as rayrlhf's ``rollout.template=plain`` does.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

RewardFn = Callable[[list[str], list[str]], list[float]]


def trl_reward(spec: str) -> Callable[..., list[float]]:
    """TRL's reward signature around the rayrlhf function ``MODULE:NAME``."""
    module, name = spec.split(":")
    fn: RewardFn = getattr(importlib.import_module(module), name)

    def reward(prompts: list[str], completions: list[str], **_: object) -> list[float]:
        return fn(prompts, completions)

    reward.__name__ = name  # TRL logs each reward function under its name
    return reward


class StepClock(TrainerCallback):
    """The wall-clock time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.ends.append(time.perf_counter())


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("--model", "--prompts", "--out", "--reward"):
        ap.add_argument(name, required=True)
    for name in ("--steps", "--completions", "--group-size", "--max-new-tokens", "--seed"):
        ap.add_argument(name, type=int, required=True)
    for name in ("--temperature", "--lr", "--kl-coef"):
        ap.add_argument(name, type=float, required=True)
    a = ap.parse_args()
    prompts = [json.loads(line)["prompt"] for line in Path(a.prompts).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model)
    args = GRPOConfig(
        output_dir=str(Path(a.out).parent / "trl-out"),
        max_steps=a.steps,
        per_device_train_batch_size=a.completions,  # completions per step
        gradient_accumulation_steps=1,
        num_generations=a.group_size,
        max_completion_length=a.max_new_tokens,
        temperature=a.temperature,
        top_k=0,  # sample the policy's own distribution, as rayrlhf does
        learning_rate=a.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=a.kl_coef,  # k3 KL to the reference in the loss, like rayrlhf grpo
        loss_type="grpo",  # per-sequence mean, like rayrlhf grpo
        num_iterations=1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=a.seed,
        use_cpu=True,
        bf16=False,
        # TRL's default is True (recompute activations in backward, ~20% slower training);
        # rayrlhf's learner does not recompute (learner.gradient_checkpointing=false)
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    clock = StepClock()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[trl_reward(a.reward)],
        args=args,
        # plain strings: no chat template (see the module docstring); at least 1,000 rows so a
        # short prompt file (the tiny mode's 20) gives TRL's sampler the same rows as before
        train_dataset=Dataset.from_dict({"prompt": prompts * math.ceil(1000 / len(prompts))}),
        processing_class=tok,
        callbacks=[clock],
    )
    start = time.perf_counter()
    trainer.train()
    rewards = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    Path(a.out).write_text(json.dumps({"start": start, "ends": clock.ends, "rewards": rewards}))


if __name__ == "__main__":
    main()
