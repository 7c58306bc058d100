"""EnvironmentWorker: runs heavy environments (a sandboxed interpreter, a remote service) for the
rollout workers, in actors of their own (``env_workers``), with their own count and placement.

A rollout worker sends a chunk's episodes to one environment worker: one call resets them all,
one call per turn steps those still running (on the worker's threads), one call frees them. The
chunk's first sample id keys its episodes there, so a chunk redone (after any death) simply
starts them again: environments are seeded by sample id, so the redone episodes are the same.

An environment worker that dies, or does not answer within ``env_workers.call_timeout_s``, makes
the rollout worker's call raise :class:`rayrlhf.faults.EnvironmentLost`; the driver then
replaces that environment worker (not the rollout worker, which is fine) and redoes the chunk.
"""

from __future__ import annotations

from typing import Any

import ray

from rayrlhf.envs import EnvStep, load_environment
from rayrlhf.envs.batch import LocalEnvs
from rayrlhf.faults import WORKER_LOST, EnvironmentLost, one_line


class EnvironmentWorker:
    """Holds the environments of the chunks in flight, by chunk key."""

    def __init__(self, spec: str, threads: int = 1) -> None:
        self.cls = load_environment(spec)
        self.threads = threads
        self.chunks: dict[str, LocalEnvs] = {}

    def reset(
        self, key: str, rows: list[dict[str, Any]], sample_ids: list[str]
    ) -> tuple[list[str], list[str]]:
        """Start a chunk's episodes (replacing any under ``key``, from an earlier attempt at the
        chunk); their first observations and the turn-ending stop strings."""
        old = self.chunks.pop(key, None)
        if old is not None:
            old.close()
        envs = LocalEnvs(self.cls, rows, sample_ids, self.threads)
        self.chunks[key] = envs
        return envs.firsts, envs.stop

    def step(
        self, key: str, indices: list[int], texts: list[str], ids: list[list[int]]
    ) -> list[EnvStep]:
        """One turn of the chunk's running episodes (see :meth:`LocalEnvs.step`)."""
        return self.chunks[key].step(indices, texts, ids)

    def close(self, key: str) -> None:
        """The chunk's episodes are over."""
        envs = self.chunks.pop(key, None)
        if envs is not None:
            envs.close()

    def live_chunks(self) -> int:
        """Chunks whose episodes are held (a leak check for tests)."""
        return len(self.chunks)


class RemoteEnvs:
    """A rollout worker's view of its chunk's episodes on environment worker ``actor``
    (the :class:`rayrlhf.envs.batch.EnvBatch` interface)."""

    def __init__(
        self,
        actor: Any,
        key: str,
        rows: list[dict[str, Any]],
        sample_ids: list[str],
        timeout_s: float,
    ) -> None:
        self.actor, self.key, self.timeout_s = actor, key, timeout_s
        self.firsts, self.stop = self._get(actor.reset.remote(key, rows, sample_ids))

    def step(self, indices: list[int], texts: list[str], ids: list[list[int]]) -> list[EnvStep]:
        """See :meth:`rayrlhf.envs.batch.EnvBatch.step`."""
        return self._get(self.actor.step.remote(self.key, indices, texts, ids))

    def close(self) -> None:
        """Free the episodes there; not waited for (a dead actor holds nothing)."""
        self.actor.close.remote(self.key)

    def _get(self, ref: ray.ObjectRef) -> Any:
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except (ray.exceptions.GetTimeoutError, *WORKER_LOST) as err:
            # Not an error of the chunk: the driver replaces the environment worker and redoes it.
            raise EnvironmentLost(
                f"environment worker lost during chunk {self.key!r}: {one_line(err)}"
            ) from None
