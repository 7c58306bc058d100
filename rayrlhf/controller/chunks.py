"""A step's chunks through the rollout, reward and reference workers, surviving dead ones.

Each chunk is dispatched as three calls (generate → score and reference log-probs), each with a
receipt the driver reads; the results stay in the object store. A chunk whose call failed
because a worker died (or hung past ``timeouts.rollout_s``, or its result was lost) is
dispatched again, under the same sample ids, after the dead actor is replaced: chunk-seeded
sampling makes the redone chunk the same chunk. An error raised by the work itself (a reward
function returning NaN) is not retried: it is raised to the trainer, which stops the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from rayrlhf.buffer import ChunkRefs
from rayrlhf.cluster import RoleGroup
from rayrlhf.experience import PromptChunk
from rayrlhf.faults import (
    WORKER_LOST,
    EnvironmentLost,
    FaultCounts,
    PhaseTimeout,
    RunFailed,
    is_lost,
    one_line,
    root_cause,
)

ROLES = ("rollout", "reward", "reference")  # the order a chunk's calls read each other


@dataclass
class _InFlight:
    """One dispatch of a chunk: its result refs, their receipts, and the actors doing it."""

    refs: ChunkRefs
    receipts: tuple[Any, ...]  # one per role the runner drives, in ROLES order
    actors: tuple[Any, ...]
    env: Any = None  # the environment worker the rollout worker sends the episodes to, if any


@dataclass
class ChunkBatch:
    """Chunks dispatched together: those still in flight and those done."""

    chunks: list[PromptChunk]
    version: int | None
    weights: list[Any] | None
    flights: dict[int, _InFlight] = field(default_factory=dict)
    done: dict[int, ChunkRefs] = field(default_factory=dict)

    @property
    def sample_ids(self) -> list[str]:
        """Every sample of the batch."""
        return [sid for c in self.chunks for sid in c.sample_ids]


class ChunkRunner:
    """Runs chunks on the three role groups; replaces dead actors, counts what it survived.

    ``on_replaced(role, actor)`` brings a new actor up to date before it works (a rollout
    worker loads the current policy version). ``groups`` may lack ``reference`` (an algorithm
    whose KL coefficient is 0 starts no reference worker) and ``reward`` (``rayrlhf label``:
    people score the responses); its chunks then have no such result. An ``environment``
    group (``env_workers``) runs the episodes' environments: each chunk's rollout call names one
    of its workers, and a chunk whose environment worker was lost replaces that worker.
    """

    def __init__(
        self,
        groups: dict[str, RoleGroup],
        counts: FaultCounts,
        max_restarts: int,
        timeout_s: float,
        on_replaced: Callable[[str, Any], None],
    ) -> None:
        self.groups, self.counts = groups, counts
        self.roles = tuple(r for r in ROLES if r in groups)
        self.max_restarts, self.timeout_s = max_restarts, timeout_s
        self.on_replaced = on_replaced
        self.envs = groups.get("environment")

    def _dispatch(self, i: int, chunk: PromptChunk, batch: ChunkBatch) -> _InFlight:
        actors = tuple(self.groups[r].actors[i % len(self.groups[r].actors)] for r in self.roles)
        args: tuple = (chunk,) if batch.version is None else (chunk, batch.version, batch.weights)
        env = None
        if self.envs is not None:
            env = self.envs.actors[i % len(self.envs.actors)]
            args = (chunk, batch.version, batch.weights, env)
        by_role = dict(zip(self.roles, actors, strict=True))
        rollout, receipt = self.groups["rollout"].submit(by_role["rollout"], *args)
        results, receipts = {"rollout": rollout}, [receipt]
        for role in self.roles[1:]:  # scores and reference log-probs both read the rollout
            results[role], receipt = self.groups[role].submit(by_role[role], rollout)
            receipts.append(receipt)
        refs = ChunkRefs(
            tuple(chunk.sample_ids), rollout, results.get("reward"), results.get("reference")
        )
        return _InFlight(refs, tuple(receipts), actors, env)

    def start(
        self, chunks: list[PromptChunk], version: int | None = None, weights: Any = None
    ) -> ChunkBatch:
        """Dispatch ``chunks`` and return at once; :meth:`finish` waits for them.

        ``version``/``weights`` (asynchronous training): the policy version the chunks must be
        generated with and a ref to its weights; None generates with what the workers hold.
        """
        # A list keeps the ref unresolved on the way: a worker fetches it only to load it.
        batch = ChunkBatch(chunks, version, None if weights is None else [weights])
        batch.flights = {i: self._dispatch(i, c, batch) for i, c in enumerate(chunks)}
        return batch

    def finish(self, batch: ChunkBatch) -> list[ChunkRefs]:
        """Every chunk's result refs, in chunk order, once all calls of each succeeded; a chunk
        whose worker was lost is dispatched again (same ids, same policy version)."""
        flights = batch.flights
        while flights:
            complete, failed = self._wait(flights)
            for i in complete:
                batch.done[i] = flights.pop(i).refs
            if failed:
                self._recover(flights, failed)
                for i in failed:
                    flights[i] = self._dispatch(i, batch.chunks[i], batch)
                    self.counts.redispatched_chunks += 1
        return [batch.done[i] for i in range(len(batch.chunks))]

    def run(
        self, chunks: list[PromptChunk], version: int | None = None, weights: Any = None
    ) -> list[ChunkRefs]:
        """:meth:`start` then :meth:`finish`: the chunks' result refs once all are in."""
        return self.finish(self.start(chunks, version, weights))

    def _wait(
        self, flights: dict[int, _InFlight]
    ) -> tuple[list[int], dict[int, tuple[str, BaseException]]]:
        """Wait for every receipt, up to the deadline. Returns the complete chunks, and the
        failed ones with the role of the call to blame and why.

        Score and reference calls read the rollout, so a chunk's first failed call in the order
        rollout → reward → reference is its culprit. After a timeout only the earliest role with
        unfinished calls is blamed: calls of later roles may merely queue behind it (an actor
        runs its calls in order), and those chunks stay in flight.
        """
        receipts = [r for f in flights.values() for r in f.receipts]
        ray.wait(receipts, num_returns=len(receipts), timeout=self.timeout_s)
        complete: list[int] = []
        failed: dict[int, tuple[str, BaseException]] = {}
        waiting: dict[int, int] = {}  # chunk → index of its first unfinished call
        for i, flight in flights.items():
            for k, (role, receipt) in enumerate(zip(self.roles, flight.receipts, strict=True)):
                try:
                    ray.get(receipt, timeout=0)
                except ray.exceptions.GetTimeoutError:
                    waiting[i] = k
                    break
                except Exception as err:
                    cause = root_cause(err)
                    if isinstance(cause, EnvironmentLost) and self.envs is not None:
                        failed[i] = ("environment", cause)  # not the rollout worker
                        break
                    if not is_lost(err):
                        raise  # the work itself failed: retrying would fail the same way
                    failed[i] = (role, err)
                    break
            else:
                complete.append(i)
        if waiting and not failed:
            first = min(waiting.values())
            hang = PhaseTimeout(f"no result after {self.timeout_s:.0f}s")
            failed = {i: (self.roles[k], hang) for i, k in waiting.items() if k == first}
        return complete, failed

    def _recover(
        self, flights: dict[int, _InFlight], failed: dict[int, tuple[str, BaseException]]
    ) -> None:
        """Replace each dead or hung culprit once; a lost object only needs the chunk redone."""
        lost = WORKER_LOST + (PhaseTimeout, EnvironmentLost)
        for i, (role, err) in failed.items():
            flight = flights.pop(i)
            actor = flight.env if role == "environment" else flight.actors[self.roles.index(role)]
            if actor in self.groups[role].actors and isinstance(err, lost):
                self.replace(role, actor, err)  # not yet replaced (it may serve several chunks)

    def replace(self, role: str, actor: Any, err: BaseException) -> Any:
        """Count the loss of ``actor``, start its replacement and bring it up to date.

        Past ``run.max_worker_restarts`` the run stops, naming the role, actor and cause.
        """
        group = self.groups[role]
        self.counts.worker_restarts += 1
        self.counts.last_cause = f"{role} {group.name_of(actor)}: {one_line(err)}"
        if self.counts.worker_restarts > self.max_restarts:
            raise RunFailed(
                f"{self.counts.worker_restarts} worker restarts, more than "
                f"run.max_worker_restarts={self.max_restarts}; last: {self.counts.last_cause}"
            )
        print(f"[rayrlhf] lost {self.counts.last_cause}; replacing it", flush=True)
        new = group.replace(actor)
        self.on_replaced(role, new)
        return new
