"""The environments of one chunk's episodes, stepped a turn at a time for the whole chunk.

The rollout worker's episode loop (:func:`rayrlhf.generation.episodes.run_episodes`) needs, for
a chunk, the first observations, the stop strings and one ``step`` per turn for the episodes
still running. :class:`LocalEnvs` holds the environments in the calling process (the rollout
worker's for light environments, an environment worker's for heavy ones); the rollout worker's
client of an environment worker (:class:`rayrlhf.roles.environment.RemoteEnvs`) offers the same.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from rayrlhf.envs import EnvStep

T = TypeVar("T")


class EnvBatch(Protocol):
    """A chunk's environments, episode ``i`` reset on row ``i`` of the chunk."""

    firsts: list[str]  # each episode's first observation (its prompt text)
    stop: list[str]  # the strings that end a turn, of all the chunk's environments

    def step(self, indices: list[int], texts: list[str], ids: list[list[int]]) -> list[EnvStep]:
        """Episode ``indices[k]``'s turn (``texts[k]``, the sampled ``ids[k]``) → what follows."""
        ...

    def close(self) -> None:
        """The episodes are over: free what their environments hold."""
        ...


def in_parallel(calls: list[Callable[[], T]], threads: int) -> list[T]:
    """Each call's result, in order; on ``threads`` threads where more than one (a sandboxed
    tool waits on its subprocess, a remote service on the network: threads overlap them)."""
    if threads <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(min(threads, len(calls))) as pool:
        return list(pool.map(lambda call: call(), calls))


class LocalEnvs:
    """One instance of ``cls`` per episode, reset on its prompt row and sample id."""

    def __init__(
        self, cls: type, rows: list[dict[str, Any]], sample_ids: list[str], threads: int = 1
    ) -> None:
        self.threads = threads
        self.envs = [cls() for _ in rows]
        self.firsts: list[str] = in_parallel(
            [lambda e=e, r=r, s=s: e.reset(r, s)
             for e, r, s in zip(self.envs, rows, sample_ids, strict=True)],
            threads,
        )  # fmt: skip
        self.stop = sorted({s for env in self.envs for s in getattr(env, "stop", [])})

    def step(self, indices: list[int], texts: list[str], ids: list[list[int]]) -> list[EnvStep]:
        """See :meth:`EnvBatch.step`."""
        return in_parallel(
            [lambda i=i, t=t, d=d: self.envs[i].step(t, d)
             for i, t, d in zip(indices, texts, ids, strict=True)],
            self.threads,
        )  # fmt: skip

    def close(self) -> None:
        """Each environment's ``close``, where it has one."""
        for env in self.envs:
            close = getattr(env, "close", None)
            if callable(close):
                close()
        self.envs = []
