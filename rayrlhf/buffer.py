"""Experience buffer: object refs of each step's chunk results, and a ledger of every sample.

The driver holds only references and sample ids here; learner ranks resolve their own shard of
refs with :func:`fetch`. The ledger records each ``sample_id``'s state so that a sample's result
arrives once and is trained once, and none is silently dropped: a chunk whose worker died is
dispatched again under the same ids, and a run rolled back to a checkpoint forgets the samples of
the steps it redoes (:meth:`ExperienceBuffer.abandon`, :meth:`ExperienceBuffer.load_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import ray


class SampleState(str, Enum):
    """Where a sample is in its life: dispatched to workers, its results in, or trained on."""

    DISPATCHED = "dispatched"
    ARRIVED = "arrived"
    TRAINED = "trained"
    DROPPED = "dropped"  # arrived, then left out by dynamic sampling: accounted, never trained


class LedgerError(RuntimeError):
    """A sample would be counted twice (dispatched after training, arrived or trained twice)."""


@dataclass(frozen=True)
class ChunkRefs:
    """One chunk's results as object refs (or, in-process, as the objects themselves)."""

    sample_ids: tuple[str, ...]
    rollout: Any
    scores: Any
    reference: Any


@dataclass(frozen=True)
class Shard:
    """The chunks one learner rank trains on in a step; ``rows[k]`` keeps only those rows of
    chunk k (None: all of them), so dynamic sampling can drop groups without moving data."""

    rollouts: list[Any]
    scores: list[Any]
    references: list[Any]
    rows: list[list[int] | None] | None = None


def fetch(items: list[Any]) -> list[Any]:
    """Resolve object refs to their values (in the calling process); pass plain objects through."""
    refs = [i for i in items if isinstance(i, ray.ObjectRef)]
    if not refs:
        return list(items)
    values = iter(ray.get(refs))
    return [next(values) if isinstance(i, ray.ObjectRef) else i for i in items]


class ExperienceBuffer:
    """Per-step chunk refs plus the sample ledger (sample_id → state)."""

    def __init__(self) -> None:
        self.ledger: dict[str, SampleState] = {}
        self.pending: list[ChunkRefs] = []
        self.rows: list[list[int]] | None = None  # rows kept of each pending chunk (selected)
        self.trained_total = 0  # kept as a count: scanning the ledger each step grows with the run

    def dispatch(self, sample_ids: list[str] | tuple[str, ...]) -> None:
        """Record samples handed to workers; dispatching one again (its worker died) is allowed,
        dispatching one whose result is in or trained is an error."""
        for sid in sample_ids:
            state = self.ledger.get(sid)
            if state not in (None, SampleState.DISPATCHED):
                raise LedgerError(f"sample {sid!r} dispatched again in state {state.value}")
            self.ledger[sid] = SampleState.DISPATCHED

    def add(self, chunk: ChunkRefs) -> None:
        """Record a chunk whose results are in; a sample whose result is already in is an error."""
        for sid in chunk.sample_ids:
            state = self.ledger.get(sid)
            if state not in (None, SampleState.DISPATCHED):
                raise LedgerError(f"result of sample {sid!r} arrived twice (state {state.value})")
            self.ledger[sid] = SampleState.ARRIVED
        self.pending.append(chunk)

    def select(self, rows: list[list[int]]) -> None:
        """Keep only ``rows[k]`` of pending chunk k; the other samples become DROPPED."""
        if len(rows) != len(self.pending):
            raise LedgerError(f"selection for {len(rows)} of {len(self.pending)} pending chunks")
        for chunk, keep in zip(self.pending, rows, strict=True):
            kept = set(keep)
            for i, sid in enumerate(chunk.sample_ids):
                if i not in kept:
                    self.ledger[sid] = SampleState.DROPPED
        self.rows = [list(r) for r in rows]

    def _selected_shards(self, num_ranks: int) -> list[Shard]:
        """Kept rows dealt in contiguous runs of equal size: rank r gets the r-th run, so a
        group (contiguous rows of one chunk) is never split when runs are whole groups."""
        assert self.rows is not None
        flat = [(c, i) for c, keep in enumerate(self.rows) for i in keep]
        if len(flat) % num_ranks:
            raise ValueError(f"{len(flat)} selected samples do not split over {num_ranks} ranks")
        per = len(flat) // num_ranks
        shards = []
        for r in range(num_ranks):
            mine: dict[int, list[int]] = {}
            for c, i in flat[r * per : (r + 1) * per]:
                mine.setdefault(c, []).append(i)
            chunks = [self.pending[c] for c in mine]
            shards.append(
                Shard(
                    [x.rollout for x in chunks],
                    [x.scores for x in chunks],
                    [x.reference for x in chunks],
                    list(mine.values()),
                )
            )
        return shards

    def shards(self, num_ranks: int) -> list[Shard]:
        """Split the pending chunks round-robin over ranks (chunk i → rank i mod L); after a
        :meth:`select`, the kept rows in equal contiguous runs instead."""
        if self.rows is not None:
            return self._selected_shards(num_ranks)
        if len(self.pending) % num_ranks:
            raise ValueError(f"{len(self.pending)} chunks do not split over {num_ranks} ranks")
        groups = [self.pending[r::num_ranks] for r in range(num_ranks)]
        return [
            Shard([c.rollout for c in g], [c.scores for c in g], [c.reference for c in g])
            for g in groups
        ]

    def mark_trained(self) -> int:
        """Mark every pending sample trained and clear the step; returns how many."""
        n = 0
        for chunk in self.pending:
            for sid in chunk.sample_ids:
                if self.ledger[sid] is SampleState.DROPPED:
                    continue
                if self.ledger[sid] is not SampleState.ARRIVED:
                    raise LedgerError(f"sample {sid!r} trained twice")
                self.ledger[sid] = SampleState.TRAINED
                n += 1
        self.pending, self.rows = [], None
        self.trained_total += n
        return n

    def abandon(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Forget the samples of the unfinished step: they will be dispatched again, same ids.
        ``keep``: dispatched samples of steps still in flight, which stay dispatched."""
        unfinished = {sid for chunk in self.pending for sid in chunk.sample_ids}
        self.pending, self.rows = [], None
        done = (SampleState.TRAINED, SampleState.DROPPED)
        self.ledger = {
            k: v
            for k, v in self.ledger.items()
            if (v in done and k not in unfinished) or (k in keep and v is SampleState.DISPATCHED)
        }

    def count(self, state: SampleState) -> int:
        """Samples currently in ``state``."""
        return sum(1 for s in self.ledger.values() if s is state)

    def state_dict(self) -> dict[str, Any]:
        """The ledger at a step boundary, for a checkpoint: trained and dropped samples, and the
        dispatched ones of steps generated ahead (asynchronous training), which a resume
        dispatches again under the same ids."""
        by_state: dict[SampleState, list[str]] = {s: [] for s in SampleState}
        for sid, state in self.ledger.items():
            by_state[state].append(sid)
        if self.pending or by_state[SampleState.ARRIVED]:  # a step's results in: mid-step
            raise LedgerError("the ledger is checkpointed between steps only")
        return {
            "trained": sorted(by_state[SampleState.TRAINED]),
            "dropped": sorted(by_state[SampleState.DROPPED]),
            "dispatched": sorted(by_state[SampleState.DISPATCHED]),
            "trained_total": self.trained_total,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (replacing everything held now)."""
        self.pending, self.rows = [], None
        self.ledger = {sid: SampleState.TRAINED for sid in state["trained"]}
        self.ledger.update({sid: SampleState.DROPPED for sid in state.get("dropped", [])})
        self.ledger.update({sid: SampleState.DISPATCHED for sid in state.get("dispatched", [])})
        self.trained_total = int(state["trained_total"])
