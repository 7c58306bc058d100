"""An environment for the tiny word-level models (rayrlhf.tiny_models), for tests and
benchmarks: the words "good" and "film" end a turn as a tool call's closing tag would.

A turn ending so is answered with the observation "the plot" (two tokens) and another turn; a
turn without either ends the episode. Each call earns 0.25; a call whose turn also says "bad"
counts as a tool error. Deterministic, as environments must be.
"""

from __future__ import annotations

from typing import Any

from rayrlhf.envs import EnvStep


class WordToolEnv:
    """See the module docstring."""

    stop = ["good", "film"]
    OBSERVATION = " the plot"

    def reset(self, row: dict[str, Any], sample_id: str) -> str:
        return row["prompt"]

    def step(self, text: str, token_ids: list[int]) -> EnvStep:
        if not set(self.stop) & set(text.split()):
            return EnvStep(done=True)
        return EnvStep(
            observation=self.OBSERVATION,
            reward=0.25,
            tool_calls=1,
            tool_errors=int("bad" in text.split()),
        )
