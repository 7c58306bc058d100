"""Held-out evaluation of a policy: mean reward, KL to the reference, example generations.

The rollout, reward and reference workers do the work, as in a training step; one small task
per chunk turns their results into per-sample numbers, so the driver never fetches tensors.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rayrlhf.experience import PromptChunk, ReferenceLogprobs, Rollout, Scores


def eval_chunks(prompts: list[str], chunk_size: int) -> list[PromptChunk]:
    """Chunks with fixed ids ``eval-i``: sampling is seeded by id, so the evaluation before and
    after training draws with the same random numbers (a paired comparison, less noise)."""
    return [
        PromptChunk(
            sample_ids=[f"eval-{i}" for i in range(c, min(c + chunk_size, len(prompts)))],
            prompts=prompts[c : c + chunk_size],
        )
        for c in range(0, len(prompts), chunk_size)
    ]


def summarize_chunks(*results: Any) -> list[dict[str, Any]]:
    """:func:`summarize_chunk` over (rollout, scores, reference) triples laid end to end.

    One task for a whole evaluation: a task per chunk would have Ray start a worker process
    for each chunk at once (they reserve no CPU), each importing torch, for a few numbers.
    """
    triples = [results[i : i + 3] for i in range(0, len(results), 3)]
    return [sample for triple in triples for sample in summarize_chunk(*triple)]


def summarize_chunk(
    rollout: Rollout, scores: Scores, reference: ReferenceLogprobs | None
) -> list[dict[str, Any]]:
    """Per sample: prompt, response, reward, KL to the reference (nats, summed over tokens;
    NaN when no reference runs, because the KL coefficient is 0)."""
    mask = rollout.response_mask
    if reference is None:
        kl = torch.full((len(rollout),), float("nan"))
    else:
        kl = ((rollout.logprobs - reference.logprobs) * mask).sum(-1)
    return [
        {
            "sample_id": sid,
            "prompt": prompt,
            "response": response,
            "reward": float(reward),
            "kl": float(k),
            "length": float(n),
        }
        for sid, prompt, response, reward, k, n in zip(
            rollout.sample_ids,
            rollout.prompts,
            rollout.responses,
            scores.rewards.tolist(),
            kl.tolist(),
            mask.sum(-1).tolist(),
            strict=True,
        )
    ]


def mean_std_stderr(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation, and standard error of the mean."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(n - 1, 1))
    return mean, std, std / math.sqrt(n)


def aggregate(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Means over samples: ``reward/mean``, ``reward/std``, ``kl/mean`` (absent without a
    reference), ``response/length``."""
    n = len(samples)
    mean, std, stderr = mean_std_stderr([s["reward"] for s in samples])
    out = {
        "reward/mean": mean,
        "reward/std": std,
        "reward/stderr": stderr,
        "response/length": sum(s["length"] for s in samples) / n,
        "samples": float(n),
    }
    if not any(math.isnan(s["kl"]) for s in samples):
        out["kl/mean"] = sum(s["kl"] for s in samples) / n
    return out
