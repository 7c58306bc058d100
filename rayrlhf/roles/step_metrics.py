"""The online learner's step metrics: one all-reduce of named sums, then means a person reads."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rayrlhf.algos.advantages import group_mean_std
from rayrlhf.experience import RolloutBatch
from rayrlhf.roles.learner_settings import LearnerSettings
from rayrlhf.roles.rank_engine import NonFiniteError

PHASES = ("generate", "score", "reference")  # the order of RolloutBatch.phase_seconds


@dataclass
class StepRecord:
    """What one rank's step produced: its batch (B rows), the (B, R) old log-probs and KL to the
    reference (None without one), its loss means, the staleness histogram, and the learner's
    policy version after the step (it trained from one less)."""

    batch: RolloutBatch
    old_logprobs: torch.Tensor
    kl: torch.Tensor | None
    losses: dict[str, float]
    staleness: list[int]
    policy_version: int


def _local_sums(r: StepRecord) -> dict[str, torch.Tensor | float]:
    """This rank's sums, by name, of everything the metrics are means of."""
    batch, mask = r.batch, r.batch.response_mask
    fresh = (batch.policy_versions == r.policy_version - 1).float()[:, None] * mask
    gap = (r.old_logprobs - batch.logprobs).abs()
    _, g_std, _ = group_mean_std(batch.scores, batch.group_index)
    sums: dict[str, torch.Tensor | float] = {
        "n": len(batch),
        "tokens": mask.sum(),
        "all_tokens": batch.attention_mask.sum(),
        "reward": batch.scores.sum(),
        "reward_sq": (batch.scores.double() ** 2).sum(),
        "kl": r.kl.sum() if r.kl is not None else 0.0,
        "mismatch": (gap * fresh).sum(),
        "nll": (-r.old_logprobs).sum(),
        "groups": len(g_std),
        "group_std": g_std.sum(),
        "flat_groups": (g_std == 0).sum(),
        "fresh_tokens": fresh.sum(),
        "stale_gap": (gap * mask * (1 - fresh)).sum(),
    }
    sums.update({f"time/{p}": t for p, t in zip(PHASES, batch.phase_seconds, strict=True)})
    sums.update({f"staleness/{age}": count for age, count in enumerate(r.staleness)})
    sums.update({f"loss:{key}": value for key, value in r.losses.items()})
    sums.update({f"part:{k}": v.sum() for k, v in batch.reward_components.items()})
    sums.update({f"episode:{k}": v.sum() for k, v in batch.episode_stats.items()})
    return sums


def step_metrics(
    s: LearnerSettings,
    r: StepRecord,
    all_sum_named: Callable[[dict[str, torch.Tensor | float]], dict[str, float]],
) -> dict[str, float]:
    """A step's metrics, from sums over the ranks by one ``all_sum_named``; non-finite values
    are errors.

    ``rollout/logprob_mismatch`` compares the rollout's log-probs with the learner's over the
    fresh samples only (staleness 0: the same weights, so the gap is the engines' numerics);
    stale ones differ by the policy's own movement, reported as ``off_policy/logprob_gap``.
    """
    t = all_sum_named(_local_sums(r))
    n, n_tok = t["n"], t["tokens"]
    metrics = {
        "reward/mean": t["reward"] / n,
        "reward/std": max(t["reward_sq"] / n - (t["reward"] / n) ** 2, 0.0) ** 0.5,
        "response/length": n_tok / n,
        "rollout/nll": t["nll"] / n_tok,
        "samples": n,
        "tokens/response": n_tok,
        "policy_version": r.policy_version,
        # Worker busy time per phase, averaged over that role's workers.
        "time/generate": t["time/generate"] / s.workers["rollout"],
        "time/score": t["time/score"] / s.workers["reward"],
    }
    if t["time/generate"] > 0:  # tokens a worker generates per second of its busy time
        metrics["perf/generate_tokens_per_s"] = n_tok / t["time/generate"]
    if t["time/reference"] > 0:
        metrics["perf/reference_tokens_per_s"] = t["all_tokens"] / t["time/reference"]
    if r.kl is not None:
        metrics["kl/mean"] = t["kl"] / n  # summed over a response's tokens, mean over samples
        metrics["time/reference"] = t["time/reference"] / s.workers["reference"]
    if s.group_size > 1:
        # Within-prompt statistics: what the group estimators learn from.
        metrics["group/reward_std"] = t["group_std"] / t["groups"]
        metrics["group/zero_adv_fraction"] = t["flat_groups"] / t["groups"]
    if t["fresh_tokens"]:  # none when every sample is stale: nothing to compare with
        metrics["rollout/logprob_mismatch"] = t["mismatch"] / t["fresh_tokens"]
    if s.max_staleness:
        # The staleness histogram: samples by how many versions behind the learner they are.
        ages = [t[f"staleness/{age}"] for age in range(len(r.staleness))]
        metrics.update({f"staleness/{age}": count for age, count in enumerate(ages)})
        metrics["staleness/mean"] = sum(a * c for a, c in enumerate(ages)) / n
        if n_tok > t["fresh_tokens"]:
            metrics["off_policy/logprob_gap"] = t["stale_gap"] / (n_tok - t["fresh_tokens"])
    for key in (k for k in t if k.startswith("part:")):  # the reward's named components
        metrics[f"reward/{key[5:]}"] = t[key] / n
    for key in (k for k in t if k.startswith("episode:")):  # multi-turn: means per episode
        metrics[f"episode/{key[8:]}"] = t[key] / n
    world_size = s.engine.num_ranks
    for key in r.losses:
        metrics[key] = t[f"loss:{key}"] / world_size
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise NonFiniteError(f"metric {key} is {value} at policy_version {r.policy_version}")
    return metrics
