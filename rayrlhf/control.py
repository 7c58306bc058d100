"""TrainerControl: the mailbox between a running trainer and `rayrlhf scale`.

It lives as a named Ray actor next to the run. Commands are requests: the trainer applies them
between steps, when no chunk is in flight, so a resize never strands a prompt.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

if TYPE_CHECKING:
    from rayrlhf.config import Config

# Named control actors live here, so `rayrlhf scale` can find them. This module imports only
# Ray: `rayrlhf scale` must reach a run within seconds of starting (a tiny run's steps take
# less than one), without importing torch and the learner.
NAMESPACE = "rayrlhf"


class TrainerControl:
    """Holds the latest requested rollout worker count and the trainer's last reported status."""

    def __init__(self) -> None:
        self._requested: int | None = None
        self._status: dict[str, Any] = {}

    def request_rollout_workers(self, count: int) -> int:
        """Ask for ``count`` rollout workers from the next step on; returns the count."""
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"rollout worker count must be a positive integer, got {count!r}")
        self._requested = count
        return count

    def take_request(self) -> int | None:
        """The pending rollout worker count, cleared once taken (called by the trainer)."""
        requested, self._requested = self._requested, None
        return requested

    def report(self, status: dict[str, Any]) -> None:
        """The trainer's status after a step (step, policy version, worker counts)."""
        self._status = dict(status)

    def status(self) -> dict[str, Any]:
        """The last reported status, plus any request not yet applied."""
        return {**self._status, "pending_rollout_workers": self._requested}


def _control_name(run_name: str) -> str:
    return f"control/{run_name}"


def control_actor(config: Config) -> Any:
    """The run's named control actor (``control/RUN_NAME`` in the rayrlhf namespace).

    Fails when a run of the same name is already live on this cluster: `rayrlhf scale` would not
    know which one it talks to.
    """
    name = _control_name(config.run.name)
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        # On the driver's node: a zero-CPU actor may otherwise land on any node, and the loss
        # of that node would take the run's control with it (the driver's node is the run's).
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        return (
            ray.remote(TrainerControl)
            .options(name=name, namespace=NAMESPACE, num_cpus=0, scheduling_strategy=here)
            .remote()
        )
    raise RuntimeError(f"a run named {config.run.name!r} is already live on this cluster")


def release_control(config: Config, control: Any, timeout_s: float = 10.0) -> None:
    """Kill the run's control actor and wait until its name is free for the next run."""
    ray.kill(control)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(_control_name(config.run.name), namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.05)


def find_control(run_name: str) -> Any:
    """The control actor of the live run ``run_name`` (for `rayrlhf scale`)."""
    try:
        return ray.get_actor(_control_name(run_name), namespace=NAMESPACE)
    except ValueError:
        raise LookupError(f"no live run named {run_name!r} on this cluster") from None
