"""Experience buffer: object refs of each step's chunk results, and a ledger of every sample.

The driver holds only references and sample ids here; learner ranks resolve their own shard of
refs with :func:`fetch`. The ledger records each ``sample_id``'s state so that a sample is trained
at most once and none is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import ray


class SampleState(str, Enum):
    """Where a sample is in its life: dispatched to a rollout worker, or trained on."""

    DISPATCHED = "dispatched"
    TRAINED = "trained"


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

    def add(self, chunk: ChunkRefs) -> None:
        """Record a dispatched chunk; a sample id seen before is an error (no double counting)."""
        for sid in chunk.sample_ids:
            if sid in self.ledger:
                raise ValueError(f"sample {sid!r} added twice (state {self.ledger[sid].value})")
            self.ledger[sid] = SampleState.DISPATCHED
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
                if self.ledger[sid] is not SampleState.DISPATCHED:
                    raise ValueError(f"sample {sid!r} trained twice")
                self.ledger[sid] = SampleState.TRAINED
                n += 1
        self.pending = []
        self.trained_total += n
        return n

    def count(self, state: SampleState) -> int:
        """Samples currently in ``state``."""
        return sum(1 for s in self.ledger.values() if s is state)
