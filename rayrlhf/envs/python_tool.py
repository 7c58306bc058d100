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

from rayrlhf.envs.one_tool import OneToolEnv
from rayrlhf.envs.sandbox import run_python

INSTRUCTION = (
    "You can run Python: write <python>CODE</python> and what it prints follows. "
    "End with a line: Answer: ANSWER"
)
MAX_OBSERVATION = 400  # characters of a call's output shown to the policy


class PythonToolEnv(OneToolEnv):
    """Python in a sandbox as a tool (``rollout.environment:
    rayrlhf.envs.python_tool:PythonToolEnv``)."""

    tools = ["python"]
    stop = ["</python>"]
    instruction = INSTRUCTION
    timeout_s = 5.0
    memory_mb = 256

    def call(self, argument: str) -> tuple[str, bool]:
        """The code run; what it printed, or how it failed."""
        result = run_python(argument, self.timeout_s, self.memory_mb)
        if result.error is None:
            return _shown(result.stdout), False
        detail = result.stderr.strip().splitlines()[-1:] or [result.error]
        return _shown(f"error: {result.error}: {detail[0]}"), True


def _shown(output: str) -> str:
    """A call's output as the policy sees it: on its own lines, cut to its last characters."""
    body = output.strip()[-MAX_OBSERVATION:]
    return f"\nOutput: {body}\n"
