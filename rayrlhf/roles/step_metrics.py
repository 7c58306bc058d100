"""The online learner's step metrics: one all-reduce of sums, then means a person reads."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from rayrlhf.algos.advantages import group_mean_std
from rayrlhf.config import Config
from rayrlhf.experience import RolloutBatch
from rayrlhf.roles.policy_update import NonFiniteError


def step_metrics(
    config: Config,
    batch: RolloutBatch,
    old_logprobs: torch.Tensor,
    kl: torch.Tensor | None,
    losses: dict[str, float],
    staleness: list[int],
    policy_version: int,
    world_size: int,
    all_sum: Callable[..., list[float]],
) -> dict[str, float]:
    """A PPO-family step's metrics, summed over ranks by one ``all_sum``; non-finite values
    are errors. ``policy_version`` is the learner's after the step (it trained from one less).

    ``rollout/logprob_mismatch`` compares the rollout's log-probs with the learner's over the
    fresh samples only (staleness 0: the same weights, so the gap is the engines' numerics);
    stale ones differ by the policy's own movement, reported as ``off_policy/logprob_gap``.
    """
    cfg, mask = config, batch.response_mask
    # The version this step trained from (the counter has moved on by now).
    fresh = (batch.policy_versions == policy_version - 1).float()[:, None] * mask
    gap = (old_logprobs - batch.logprobs).abs()
    g_mean, g_std, _ = group_mean_std(batch.scores, batch.group_index)
    sums = all_sum(
        len(batch),
        mask.sum(),
        batch.scores.sum(),
        (batch.scores.double() ** 2).sum(),
        kl.sum() if kl is not None else 0.0,
        (gap * fresh).sum(),
        (-old_logprobs).sum(),
        len(g_mean),
        g_std.sum(),
        (g_std == 0).sum(),
        *batch.phase_seconds,
        fresh.sum(),
        (gap * mask * (1 - fresh)).sum(),
        *staleness,
        *losses.values(),
    )
    n, n_tok, s, sq, kl_sum, mismatch, nll, n_groups, std_sum, flat = sums[:10]
    t_gen, t_score, t_ref, n_fresh, stale_gap = sums[10:15]
    ages, loss_sums = sums[15 : 15 + len(staleness)], sums[15 + len(staleness) :]
    metrics = {
        "reward/mean": s / n,
        "reward/std": max(sq / n - (s / n) ** 2, 0.0) ** 0.5,
        "response/length": n_tok / n,
        "rollout/nll": nll / n_tok,
        "samples": n,
        "tokens/response": n_tok,
        "policy_version": policy_version,
        # Worker busy time per phase, averaged over that role's workers.
        "time/generate": t_gen / cfg.rollout.num_workers,
        "time/score": t_score / cfg.reward.num_workers,
    }
    if kl is not None:
        metrics["kl/mean"] = kl_sum / n  # summed over a response's tokens, mean over samples
        metrics["time/reference"] = t_ref / cfg.reference.num_workers
    if cfg.rollout.group_size > 1:
        # Within-prompt statistics: what the group estimators learn from.
        metrics["group/reward_std"] = std_sum / n_groups
        metrics["group/zero_adv_fraction"] = flat / n_groups
    if n_fresh:  # none when every sample is stale: nothing to compare with
        metrics["rollout/logprob_mismatch"] = mismatch / n_fresh
    if cfg.rollout.max_staleness:
        # The staleness histogram: samples by how many versions behind the learner they are.
        metrics.update({f"staleness/{age}": count for age, count in enumerate(ages)})
        metrics["staleness/mean"] = sum(a * c for a, c in enumerate(ages)) / n
        if n_tok > n_fresh:
            metrics["off_policy/logprob_gap"] = stale_gap / (n_tok - n_fresh)
    for key, total in zip(losses, loss_sums, strict=True):
        metrics[key] = total / world_size
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise NonFiniteError(f"metric {key} is {value} at policy_version {policy_version}")
    return metrics
