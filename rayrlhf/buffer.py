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
    """The chunks one learner rank trains on in a step."""

    rollouts: list[Any]
    scores: list[Any]
    references: list[Any]


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

    def shards(self, num_ranks: int) -> list[Shard]:
        """Split the pending chunks round-robin over ranks (chunk i → rank i mod L)."""
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
                if self.ledger[sid] is not SampleState.ARRIVED:
                    raise LedgerError(f"sample {sid!r} trained twice")
                self.ledger[sid] = SampleState.TRAINED
                n += 1
        self.pending = []
        self.trained_total += n
        return n

    def abandon(self) -> None:
        """Forget the samples of the unfinished step: they will be dispatched again, same ids."""
        self.pending = []
        self.ledger = {k: v for k, v in self.ledger.items() if v is SampleState.TRAINED}

    def count(self, state: SampleState) -> int:
        """Samples currently in ``state``."""
        return sum(1 for s in self.ledger.values() if s is state)

    def state_dict(self) -> dict[str, Any]:
        """The ledger at a step boundary (only trained samples), for a checkpoint."""
        if self.pending or self.count(SampleState.TRAINED) != len(self.ledger):
            raise LedgerError("the ledger is checkpointed between steps only")
        return {"trained": sorted(self.ledger), "trained_total": self.trained_total}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (replacing everything held now)."""
        self.pending = []
        self.ledger = {sid: SampleState.TRAINED for sid in state["trained"]}
        self.trained_total = int(state["trained_total"])
