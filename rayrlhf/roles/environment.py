"""EnvironmentWorker: runs heavy environments (a sandboxed interpreter, a remote service) for the
rollout workers, in actors of their own (``env_workers``), with their own count and placement.

A rollout worker sends a chunk's episodes to one environment worker: one call resets them all,
one call per turn steps those still running (on the worker's threads), one call frees them. The
worker serves several rollout workers' chunks at once. Each attempt at a chunk has a key of its
own; starting one drops the chunk's earlier attempts (of a rollout worker that died), whose
late calls then find nothing: a chunk redone starts its episodes afresh, and environments are
seeded by sample id, so the redone episodes are the same.

An environment worker that dies, or does not answer within ``env_workers.call_timeout_s``, makes
the rollout worker's call raise :class:`rayrlhf.faults.EnvironmentLost`; the driver then
replaces that environment worker (not the rollout worker, which is fine) and redoes the chunk.
One whose construction raised (its environment does not import on that node) is an error of
the work, not a loss: the run stops.
"""

from __future__ import annotations

import uuid
from typing import Any

import ray

from rayrlhf.envs import EnvStep, load_environment
from rayrlhf.envs.batch import LocalEnvs
from rayrlhf.faults import WORKER_LOST, EnvironmentLost, failed_to_start, one_line


class EnvironmentWorker:
    """Holds the environments of the chunks in flight, by chunk id and attempt."""

    def __init__(self, spec: str, threads: int = 1) -> None:
        self.cls = load_environment(spec)
        self.threads = threads
        self.chunks: dict[tuple[str, str], LocalEnvs] = {}

    def reset(
        self, key: tuple[str, str], rows: list[dict[str, Any]], sample_ids: list[str]
    ) -> tuple[list[str], list[str]]:
        """Start attempt ``key`` = (chunk id, attempt) at a chunk's episodes, dropping the
        chunk's other attempts; their first observations and the turn-ending stop strings."""
        for old in [k for k in self.chunks if k[0] == key[0]]:
            self.close(old)
        envs = LocalEnvs(self.cls, rows, sample_ids, self.threads)
        self.chunks[key] = envs
        return envs.firsts, envs.stop

    def step(
        self, key: tuple[str, str], indices: list[int], texts: list[str], ids: list[list[int]]
    ) -> list[EnvStep]:
        """One turn of the attempt's running episodes (see :meth:`LocalEnvs.step`)."""
        envs = self.chunks.get(key)
        if envs is None:  # only a dead rollout worker's late call gets here: nobody reads this
            raise KeyError(f"no episodes held for chunk {key[0]!r}, attempt {key[1]!r}")
        return envs.step(indices, texts, ids)

    def close(self, key: tuple[str, str]) -> None:
        """The attempt's episodes are over."""
        envs = self.chunks.pop(key, None)
        if envs is not None:
            envs.close()

    def live_chunks(self) -> int:
        """Attempts whose episodes are held (a leak check for tests)."""
        return len(self.chunks)


class RemoteEnvs:
    """A rollout worker's view of its chunk's episodes on environment worker ``actor``
    (the :class:`rayrlhf.envs.batch.EnvBatch` interface)."""

    def __init__(
        self,
        actor: Any,
        chunk_id: str,
        rows: list[dict[str, Any]],
        sample_ids: list[str],
        timeout_s: float,
    ) -> None:
        self.actor, self.timeout_s = actor, timeout_s
        self.key = (chunk_id, uuid.uuid4().hex[:12])
        self.firsts, self.stop = self._get(actor.reset.remote(self.key, rows, sample_ids))

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
            if failed_to_start(err):
                raise  # its construction raised: a replacement would raise again
            # Not an error of the chunk: the driver replaces the environment worker and redoes it.
            raise EnvironmentLost(
                f"environment worker lost during chunk {self.key[0]!r}: {one_line(err)}"
            ) from None
