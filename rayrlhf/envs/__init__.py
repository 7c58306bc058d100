"""Environments for multi-turn rollouts: the model's turn goes in, an observation comes out.

An environment is a plain class named in the config (``rollout.environment: module:Class``),
constructed with no arguments, one instance per episode, inside the rollout worker. The rollout
worker (:mod:`rayrlhf.generation.episodes`) drives it::

    first = env.reset(row, sample_id)        # the episode's first observation: the prompt text
    while not done:
        turn = <the policy generates until EOS or one of env.stop>
        step = env.step(turn_text, turn_ids) # observation, reward contribution, done, tool counts

``reset`` is seeded by ``sample_id`` alone, so an episode re-run on another worker (after a
death, a resize or a resume) is the same episode. Observations are text, tokenised once, as
they arrive, and appended to the token ids the policy sampled: the history is never
re-tokenised. Observation tokens are context for later turns and never trained on.

Tool calls are parsed from a turn by the parser the environment names (``parser``, a key of
:data:`rayrlhf.envs.tools.PARSERS`); tools that run code do so in a sandboxed subprocess
(:mod:`rayrlhf.envs.sandbox`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class EnvStep:
    """What an environment returns for one turn of the model."""

    observation: str = ""  # text appended after the turn ("" for none)
    reward: float = 0.0  # this turn's contribution to the episode's reward
    done: bool = False  # the episode ends here (no further turn)
    tool_calls: int = 0  # tool calls this turn made
    tool_errors: int = 0  # of which failed (unparsable, unknown tool, the tool raised)


class Environment(Protocol):
    """What the rollout worker needs of an environment."""

    stop: list[str]  # strings that end a turn besides EOS (a tool call's closing tag), kept

    def reset(self, row: dict[str, Any], sample_id: str) -> str:
        """Start the episode of prompt row ``row`` (``prompt`` and its other fields, such as
        ``answer``); the first observation, shown to the policy as its prompt."""
        ...

    def step(self, text: str, token_ids: list[int]) -> EnvStep:
        """The model's turn (its decoded text and the exact ids it sampled) → what follows."""
        ...


def load_environment(spec: str) -> type:
    """The environment class ``module:Class`` names; ValueError with one line otherwise."""
    module_name, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr, None)
    except ImportError as err:
        raise ValueError(
            f"rollout.environment {spec!r}: cannot import {module_name!r}: {err}"
        ) from None
    if not isinstance(cls, type) or not callable(getattr(cls, "step", None)):
        raise ValueError(f"rollout.environment {spec!r}: not a class with reset and step")
    return cls
