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
from typing import Any

import ray

from rayrlhf import cluster
from rayrlhf.buffer import ExperienceBuffer
from rayrlhf.config import Config
from rayrlhf.data.prompts import PromptSource
from rayrlhf.experience import PromptChunk, Scores
from rayrlhf.loops.rollouts import ChunkRunner


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


class StepSampler:
    """Generates a step's chunks into the buffer; returns the new prompt cursor and metrics."""

    def __init__(
        self, config: Config, prompts: PromptSource, runner: ChunkRunner, buffer: ExperienceBuffer
    ) -> None:
        self.config, self.prompts, self.runner, self.buffer = config, prompts, runner, buffer
        self.dynamic = config.algo.dynamic_sampling

    def _run(self, step: int, n_prompts: int, cursor: int, first: int) -> list[Any]:
        r = self.config.rollout
        chunks: list[PromptChunk] = self.prompts.step_chunks(
            step, n_prompts, r.chunk_size, r.group_size, cursor=cursor, first=first
        )
        for chunk in chunks:
            self.buffer.dispatch(chunk.sample_ids)
        results = self.runner.run(chunks)
        for refs in results:
            self.buffer.add(refs)
        return results

    def collect(self, step: int, cursor: int) -> tuple[int, dict[str, float]]:
        """Fill ``self.buffer`` with step ``step``'s samples, taking prompts from ``cursor``."""
        r, a = self.config.rollout, self.config.algorithm
        wanted = r.prompts_per_step
        results = self._run(step, wanted, cursor, 0)
        cursor += wanted
        if not self.dynamic:
            return cursor, {}
        flag = cluster.zero_cpu_task(informative_groups)
        flags = ray.get([flag.remote(x.scores, r.group_size) for x in results])
        rounds, first = 0, wanted
        while (missing := wanted - sum(map(sum, flags))) > 0 and rounds < a.max_fill_rounds:
            n = math.ceil(missing / r.chunk_size) * r.chunk_size
            more = self._run(step, n, cursor, first)
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
