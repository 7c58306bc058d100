"""An environment with one tool, a calculator: the policy writes ``<calc>EXPRESSION</calc>``,
the turn ends there, and `` = RESULT`` follows as the observation; a turn without a call ends the
episode (its final answer is scored by the reward function, e.g.
``rayrlhf.rewards.verifiers:numeric_answer``).

Light: it runs inside the rollout worker (the arithmetic is :func:`rayrlhf.envs.tools.calculate`,
no ``eval``). Deterministic: nothing in it is random, so an episode re-run is the same episode.
"""

from __future__ import annotations

from typing import Any

from rayrlhf.envs import EnvStep
from rayrlhf.envs.tools import PARSERS, calculate

INSTRUCTION = (
    "You have a calculator: write <calc>EXPRESSION</calc> and its result follows. "
    "End with a line: Answer: NUMBER"
)


class CalculatorEnv:
    """Arithmetic with a calculator tool (``rollout.environment:
    rayrlhf.envs.calculator:CalculatorEnv``)."""

    parser = "tag"
    tools = ["calc"]
    stop = ["</calc>"]

    def __init__(self, instruction: str = INSTRUCTION) -> None:
        self.instruction = instruction

    def reset(self, row: dict[str, Any], sample_id: str) -> str:
        """The question with the tool's instruction (a row without ``prompt`` is an error)."""
        return f"{row['prompt']}\n{self.instruction}" if self.instruction else row["prompt"]

    def step(self, text: str, token_ids: list[int]) -> EnvStep:
        """The last call of the turn, evaluated; no call: the episode ends."""
        calls = PARSERS[self.parser](text, self.tools)
        if not calls:
            return EnvStep(done=True)
        call = calls[-1]
        try:
            return EnvStep(observation=f" = {calculate(call.argument)}\n", tool_calls=len(calls))
        except ValueError as err:
            return EnvStep(observation=f" = error: {err}\n", tool_calls=len(calls), tool_errors=1)
