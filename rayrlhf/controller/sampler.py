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
from rayrlhf.controller.chunks import ChunkBatch, ChunkRunner
from rayrlhf.data.prompts import PromptSource
from rayrlhf.experience import PromptChunk, Scores
from rayrlhf.weights.publisher import WeightPublisher


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
    """Owns the prompt cursor and the steps in flight; fills the buffer with a step's samples.

    With ``rollout.max_staleness`` k > 0 it dispatches the steps up to k ahead itself (with the
    policy version the learners hold then), so they generate while the current one trains;
    :attr:`ahead` holds them, and a checkpoint records them (:meth:`position`).
    """

    def __init__(
        self,
        config: Config,
        prompts: PromptSource,
        runner: ChunkRunner,
        publisher: WeightPublisher,
    ) -> None:
        self.config, self.prompts, self.runner = config, prompts, runner
        self.publisher = publisher
        self.dynamic = config.algo.dynamic_sampling
        self.max_ahead = config.rollout.max_staleness
        self.reset(ExperienceBuffer(), 0)

    def reset(self, buffer: ExperienceBuffer, cursor: int) -> None:
        """Start afresh at prompt ``cursor`` with ``buffer``: nothing in flight."""
        self.buffer, self.cursor = buffer, cursor
        self.ahead: dict[int, StepFlight] = {}
        self._step_start: int | None = None  # synchronous: the cursor of the step collecting

    def restore(self, buffer: ExperienceBuffer, cursor: int, in_flight: list[dict]) -> None:
        """Back to a checkpoint's position: the steps that were generating ahead are dispatched
        again under the same ids, with the same policy versions (their weights are loaded)."""
        self.reset(buffer, cursor)
        for f in in_flight:
            v = int(f["version"])
            self._start(int(f["step"]), int(f["cursor"]), v, self.publisher.refs[v])

    def _chunks(self, step: int, n_prompts: int, cursor: int, first: int) -> list[PromptChunk]:
        r = self.config.rollout
        chunks: list[PromptChunk] = self.prompts.step_chunks(
            step, n_prompts, r.chunk_size, r.group_size, cursor=cursor, first=first
        )
        for chunk in chunks:
            self.buffer.dispatch(chunk.sample_ids)
        return chunks

    def _start(self, step: int, cursor: int, version: int | None, weights: Any) -> int:
        """Dispatch step ``step``'s prompts from ``cursor`` (generated with policy ``version``,
        whose weights ``weights`` refers to); returns the cursor after them."""
        wanted = self.config.rollout.prompts_per_step
        batch = self.runner.start(self._chunks(step, wanted, cursor, 0), version, weights)
        self.ahead[step] = StepFlight(cursor, version, batch)
        return cursor + wanted

    def dispatch_ahead(self, step: int, version: int) -> None:
        """Asynchronous: dispatch the steps from ``step`` up to ``max_staleness`` ahead (not past
        ``run.num_steps``) with policy ``version``, the one the learners hold now."""
        if not self.max_ahead:
            return
        v, weights = self.publisher.for_dispatch(version)
        last = min(step + self.max_ahead, self.config.run.num_steps - 1)
        for t in range(step, last + 1):
            if t not in self.ahead:
                self.cursor = self._start(t, self.cursor, v, weights)

    def settle(self) -> None:
        """Wait until every chunk dispatched ahead is done (before workers are removed); the
        results stay in the object store until their step is collected."""
        for flight in self.ahead.values():
            self.runner.finish(flight.batch)

    def abandon_uncollected(self) -> None:
        """Before a checkpoint after a failure: samples dispatched for a step that will be
        dispatched again are no longer in flight (those ahead are: the checkpoint keeps them)."""
        ahead = {sid for f in self.ahead.values() for sid in f.batch.sample_ids}
        self.buffer.abandon(ahead if self.max_ahead else frozenset())

    def position(self) -> tuple[int, list[dict[str, int | None]]]:
        """The prompt cursor and the steps in flight, as a checkpoint records them. A step that
        was collecting synchronously when the run stopped is redone from its first prompt."""
        if not self.max_ahead:
            cursor = self.cursor if self._step_start is None else self._step_start
            return cursor, []
        in_flight = [
            {"step": t, "cursor": f.cursor, "version": f.version}
            for t, f in sorted(self.ahead.items())
        ]
        return self.cursor, in_flight

    def collect(self, step: int, version: int) -> dict[str, float]:
        """Fill the buffer with step ``step``'s samples (generated, scored, reference log-probs):
        those dispatched ahead, or else prompts from the cursor now. Dynamic sampling's further
        rounds take prompts from the cursor too. Returns the sampling metrics."""
        r, a = self.config.rollout, self.config.algorithm
        wanted = r.prompts_per_step
        self.dispatch_ahead(step, version)
        v, weights = self.publisher.for_dispatch(version)
        self._step_start = None if self.max_ahead else self.cursor
        if step not in self.ahead:
            self.cursor = self._start(step, self.cursor, v, weights)
        results = self.runner.finish(self.ahead[step].batch)
        del self.ahead[step]  # only once its chunks are in: a failure before keeps it in flight
        for refs in results:
            self.buffer.add(refs)
        if not self.dynamic:
            self._step_start = None
            return {}
        flag = cluster.zero_cpu_task(informative_groups)
        flags = ray.get([flag.remote(x.scores, r.group_size) for x in results])
        rounds, first = 0, wanted
        while (missing := wanted - sum(map(sum, flags))) > 0 and rounds < a.max_fill_rounds:
            n = math.ceil(missing / r.chunk_size) * r.chunk_size
            more = self.runner.run(self._chunks(step, n, self.cursor, first), v, weights)
            for refs in more:
                self.buffer.add(refs)
            flags += ray.get([flag.remote(x.scores, r.group_size) for x in more])
            self.cursor, first, rounds = self.cursor + n, first + n, rounds + 1
        keep, counts = choose_groups(flags, wanted)
        g = r.group_size
        self.buffer.select(
            [[i for k in groups for i in range(k * g, (k + 1) * g)] for groups in keep]
        )
        self._step_start = None
        total = sum(len(f) for f in flags)
        return {
            "group/sampled": float(total),
            "group/dropped": float(counts["dropped"]),
            "group/surplus": float(counts["surplus"]),
            "group/flat_fraction_sampled": (total - sum(map(sum, flags))) / total,
            "group/fill_rounds": float(rounds),
        }
