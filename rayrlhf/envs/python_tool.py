"""An environment with a Python interpreter as its tool: the policy writes
``<python>CODE</python>``, the turn ends there, and what the code printed follows as the
observation; a turn without a call ends the episode (its final answer is scored by the reward
function, e.g. ``rayrlhf.rewards.verifiers:math_answer``).

Heavy: every call starts a sandboxed ``python -I`` (:func:`rayrlhf.envs.sandbox.run_python`:
a time limit, a memory limit, no network, an empty folder), tens of milliseconds at best. Run it
on environment workers (``env_workers.num_workers`` > 0), whose threads overlap a turn's calls,
so the rollout workers' cores keep generating. Deterministic for deterministic code: each call
runs in a fresh process, so an episode re-run is the same episode.
"""

from __future__ import annotations

from typing import Any

from rayrlhf.envs import EnvStep
from rayrlhf.envs.sandbox import run_python
from rayrlhf.envs.tools import PARSERS

INSTRUCTION = (
    "You can run Python: write <python>CODE</python> and what it prints follows. "
    "End with a line: Answer: ANSWER"
)
MAX_OBSERVATION = 400  # characters of a call's output shown to the policy


class PythonToolEnv:
    """Python in a sandbox as a tool (``rollout.environment:
    rayrlhf.envs.python_tool:PythonToolEnv``)."""

    parser = "tag"
    tools = ["python"]
    stop = ["</python>"]
    timeout_s = 5.0
    memory_mb = 256

    def __init__(self, instruction: str = INSTRUCTION) -> None:
        self.instruction = instruction

    def reset(self, row: dict[str, Any], sample_id: str) -> str:
        """The question with the tool's instruction."""
        return f"{row['prompt']}\n{self.instruction}" if self.instruction else row["prompt"]

    def step(self, text: str, token_ids: list[int]) -> EnvStep:
        """The turn's last call, run; its output (or how it failed) is the observation."""
        calls = PARSERS[self.parser](text, self.tools)
        if not calls:
            return EnvStep(done=True)
        result = run_python(calls[-1].argument, self.timeout_s, self.memory_mb)
        if result.error is None:
            return EnvStep(observation=_shown(result.stdout), tool_calls=len(calls))
        detail = result.stderr.strip().splitlines()[-1:] or [result.error]
        return EnvStep(
            observation=_shown(f"error: {result.error}: {detail[0]}"),
            tool_calls=len(calls),
            tool_errors=1,
        )


def _shown(output: str) -> str:
    """A call's output as the policy sees it: on its own lines, cut to its last characters."""
    body = output.strip()[-MAX_OBSERVATION:]
    return f"\nOutput: {body}\n"
