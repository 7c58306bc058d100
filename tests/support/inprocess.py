"""The online learner built in-process, without Ray: one step's config and a set-up rank."""

from __future__ import annotations

from pathlib import Path

from rayrlhf.config import Config, load
from rayrlhf.roles.learner import Learner


def step_config(policy: Path | str, prompts_file: Path | str, *extra: str) -> Config:
    """Four samples a step in one chunk and one minibatch of two micro-batches, a rule reward;
    ``extra`` overrides come last and win."""
    return load(
        None,
        [
            f"model.policy={policy}",
            f"data.prompts={prompts_file}",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
            "rollout.max_new_tokens=8",
            "rollout.prompts_per_step=4",
            "rollout.chunk_size=4",
            "learner.minibatch_size=4",
            "learner.micro_batch_size=2",
            "learner.policy_lr=1e-3",
            "learner.value_lr=1e-3",
            *extra,
        ],
    )


def setup_learner(config: Config) -> Learner:
    """A one-rank learner group, set up."""
    learner = Learner(config, 0)
    learner.setup(*learner.rendezvous_address())
    return learner
