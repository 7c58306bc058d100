"""TrainerControl: the mailbox between a running trainer and `rayrlhf scale`.

It lives as a named Ray actor next to the run. Commands are requests: the trainer applies them
between steps, when no chunk is in flight, so a resize never strands a prompt.
"""

from __future__ import annotations

from typing import Any


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
