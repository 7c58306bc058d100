"""A step's samples: the step's prompts through the workers, and DAPO's dynamic sampling.

Without dynamic sampling a step generates ``rollout.prompts_per_step`` prompts × ``group_size``
samples and trains on all of them. With it (``algorithm.dynamic_sampling``), a group whose
rewards are all equal has zero advantage under a group estimator and teaches nothing: such groups
are dropped and counted, and further prompts are generated (up to ``algorithm.max_fill_rounds``
rounds) until the step holds ``prompts_per_step`` informative groups. Surplus informative groups
of the last round are dropped too (counted apart), so every step trains on the same batch size.
When the rounds run out, degenerate groups fill the rest (they carry no policy gradient).

Only small things reach the driver: one flag per group, computed by a zero-CPU task next to the
scores. Dropped samples are recorded in the ledger as such: accounted for, never trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ray

from rayrlhf import cluster
from rayrlhf.buffer import ExperienceBuffer
from rayrlhf.config import Config
from rayrlhf.data.prompts import PromptSource
from rayrlhf.experience import PromptChunk, Scores
from rayrlhf.loops.rollouts import ChunkBatch, ChunkRunner


def informative_groups(scores: Scores, group_size: int) -> list[bool]:
    """Per group of ``group_size`` consecutive rows: whether its rewards are not all equal."""
    r = scores.rewards.reshape(-1, group_size)
    return (r.max(dim=1).values > r.min(dim=1).values).tolist()


def choose_groups(flags: list[list[bool]], wanted: int) -> tuple[list[list[int]], dict[str, int]]:
    """Which groups of each chunk a step trains on: the first ``wanted`` informative ones in chunk
    order, then (if too few) the first degenerate ones. Returns the group numbers kept per chunk
    and the counts ``dropped`` (degenerate, not trained) and ``surplus`` (informative, unneeded).
    """
    order = [(c, g) for c, chunk in enumerate(flags) for g, ok in enumerate(chunk) if ok]
    order += [(c, g) for c, chunk in enumerate(flags) for g, ok in enumerate(chunk) if not ok]
    keep = sorted(order[:wanted])
    informative = sum(ok for chunk in flags for ok in chunk)
    kept_informative = sum(flags[c][g] for c, g in keep)
    total = sum(len(chunk) for chunk in flags)
    per_chunk: list[list[int]] = [[] for _ in flags]
    for c, g in keep:
        per_chunk[c].append(g)
    counts = {
        "surplus": informative - kept_informative,
        "dropped": total - len(keep) - (informative - kept_informative),
    }
    return per_chunk, counts


@dataclass
class StepFlight:
    """A step whose first round of chunks is dispatched: where its prompts started, the policy
    version it is generated with (None: whatever the workers hold), its chunks."""

    cursor: int
    version: int | None
    batch: ChunkBatch


class StepSampler:
    """Generates a step's chunks into the buffer; returns the new prompt cursor and metrics.

    With ``rollout.max_staleness`` > 0 the driver starts the next steps before the
    current one trains; :attr:`ahead` holds them (and is what a checkpoint records of them).
    """

    def __init__(
        self, config: Config, prompts: PromptSource, runner: ChunkRunner, buffer: ExperienceBuffer
    ) -> None:
        self.config, self.prompts, self.runner, self.buffer = config, prompts, runner, buffer
        self.dynamic = config.algo.dynamic_sampling
        self.ahead: dict[int, StepFlight] = {}

    def _chunks(self, step: int, n_prompts: int, cursor: int, first: int) -> list[PromptChunk]:
        r = self.config.rollout
        chunks: list[PromptChunk] = self.prompts.step_chunks(
            step, n_prompts, r.chunk_size, r.group_size, cursor=cursor, first=first
        )
        for chunk in chunks:
            self.buffer.dispatch(chunk.sample_ids)
        return chunks

    def start(self, step: int, cursor: int, version: int | None = None, weights: Any = None) -> int:
        """Dispatch step ``step``'s prompts from ``cursor`` (generated with policy ``version``,
        whose weights ``weights`` refers to); returns the cursor after them."""
        wanted = self.config.rollout.prompts_per_step
        batch = self.runner.start(self._chunks(step, wanted, cursor, 0), version, weights)
        self.ahead[step] = StepFlight(cursor, version, batch)
        return cursor + wanted

    def settle(self) -> None:
        """Wait until every chunk dispatched ahead is done (before workers are removed); the
        results stay in the object store until their step is collected."""
        for flight in self.ahead.values():
            self.runner.finish(flight.batch)

    def in_flight_ids(self) -> set[str]:
        """The samples of the steps dispatched ahead (dispatched, not yet collected)."""
        return {sid for f in self.ahead.values() for sid in f.batch.sample_ids}

    def in_flight(self) -> list[dict[str, int | None]]:
        """The steps dispatched ahead, as a checkpoint records them."""
        return [
            {"step": t, "cursor": f.cursor, "version": f.version}
            for t, f in sorted(self.ahead.items())
        ]

    def collect(
        self, step: int, cursor: int, version: int | None = None, weights: Any = None
    ) -> tuple[int, dict[str, float]]:
        """Fill ``self.buffer`` with step ``step``'s samples: those dispatched ahead, or else
        prompts from ``cursor`` now. Dynamic sampling's further rounds take prompts from
        ``cursor`` and generate with ``version``. Returns the cursor after them and metrics."""
        r, a = self.config.rollout, self.config.algorithm
        wanted = r.prompts_per_step
        if step not in self.ahead:
            cursor = self.start(step, cursor, version, weights)
        results = self.runner.finish(self.ahead[step].batch)
        del self.ahead[step]  # only once its chunks are in: a failure before keeps it in flight
        for refs in results:
            self.buffer.add(refs)
        if not self.dynamic:
            return cursor, {}
        flag = cluster.zero_cpu_task(informative_groups)
        flags = ray.get([flag.remote(x.scores, r.group_size) for x in results])
        rounds, first = 0, wanted
        while (missing := wanted - sum(map(sum, flags))) > 0 and rounds < a.max_fill_rounds:
            n = math.ceil(missing / r.chunk_size) * r.chunk_size
            more = self.runner.run(self._chunks(step, n, cursor, first), version, weights)
            for refs in more:
                self.buffer.add(refs)
            flags += ray.get([flag.remote(x.scores, r.group_size) for x in more])
            cursor, first, rounds = cursor + n, first + n, rounds + 1
        keep, counts = choose_groups(flags, wanted)
        g = r.group_size
        self.buffer.select(
            [[i for k in groups for i in range(k * g, (k + 1) * g)] for groups in keep]
        )
        total = sum(len(f) for f in flags)
        return cursor, {
            "group/sampled": float(total),
            "group/dropped": float(counts["dropped"]),
            "group/surplus": float(counts["surplus"]),
            "group/flat_fraction_sampled": (total - sum(map(sum, flags))) / total,
            "group/fill_rounds": float(rounds),
        }
