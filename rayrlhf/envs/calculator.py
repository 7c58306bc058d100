"""An environment with one tool, a calculator: the policy writes ``<calc>EXPRESSION</calc>``,
the turn ends there, and `` = RESULT`` follows as the observation; a turn without a call ends the
episode (its final answer is scored by the reward function, e.g.
``rayrlhf.rewards.verifiers:numeric_answer``).

Light: it runs inside the rollout worker (the arithmetic is :func:`rayrlhf.envs.tools.calculate`,
no ``eval``). Deterministic: nothing in it is random, so an episode re-run is the same episode.
"""

from __future__ import annotations

from rayrlhf.envs.one_tool import OneToolEnv
from rayrlhf.envs.tools import calculate

INSTRUCTION = (
    "You have a calculator: write <calc>EXPRESSION</calc> and its result follows. "
    "End with a line: Answer: NUMBER"
)


class CalculatorEnv(OneToolEnv):
    """Arithmetic with a calculator tool (``rollout.environment:
    rayrlhf.envs.calculator:CalculatorEnv``)."""

    tools = ["calc"]
    stop = ["</calc>"]
    instruction = INSTRUCTION

    def call(self, argument: str) -> tuple[str, bool]:
        """The expression's value, or why it has none."""
        try:
            return f" = {calculate(argument)}\n", False
        except ValueError as err:
            return f" = error: {err}\n", True
