"""Procedural prompt sources: a reasoning-gym task named in the config (``data.reasoning_gym``,
``eval.reasoning_gym``)."""

from __future__ import annotations

from pydantic import Field

from rayrlhf.config.base import _Section


class ReasoningGymConfig(_Section):
    """A procedural task of reasoning-gym as prompt rows, generated here (no hub)."""

    task: str = Field(..., min_length=1, description="reasoning-gym dataset name.")
    size: int = Field(1000, ge=1, description="Rows generated.")
    seed: int = Field(1, description="The task's seed: a held-out set takes another.")
    instruction: str = Field(
        "Give the final answer on its own line as: Answer: <answer>",
        description="Appended to each question (empty: the question alone).",
    )
