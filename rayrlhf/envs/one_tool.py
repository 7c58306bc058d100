"""The shape of an environment with one tool called by tag: the question with the tool's
instruction comes first; a turn that calls the tool gets the tool's answer to its last call,
and a turn without a call ends the episode (its final answer is the reward function's to score).
"""

from __future__ import annotations

from typing import Any

from rayrlhf.envs import EnvStep
from rayrlhf.envs.tools import PARSERS


class OneToolEnv:
    """Subclasses name the tool (``tools``, ``stop``), give ``instruction`` and implement
    :meth:`call`."""

    parser = "tag"
    tools: list[str] = []
    stop: list[str] = []
    instruction = ""

    def __init__(self, instruction: str | None = None) -> None:
        if instruction is not None:
            self.instruction = instruction

    def reset(self, row: dict[str, Any], sample_id: str) -> str:
        """The question with the tool's instruction (a row without ``prompt`` is an error)."""
        return f"{row['prompt']}\n{self.instruction}" if self.instruction else row["prompt"]

    def step(self, text: str, token_ids: list[int]) -> EnvStep:
        """The turn's last call, answered; no call: the episode ends."""
        calls = PARSERS[self.parser](text, self.tools)
        if not calls:
            return EnvStep(done=True)
        observation, failed = self.call(calls[-1].argument)
        return EnvStep(observation=observation, tool_calls=len(calls), tool_errors=int(failed))

    def call(self, argument: str) -> tuple[str, bool]:
        """The observation answering a call with ``argument``, and whether the call failed."""
        raise NotImplementedError
