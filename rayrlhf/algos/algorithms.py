"""The online algorithms as pure descriptions, chosen by name from one table.

An :class:`Algorithm` says what the learner must do, never how the loop runs: which advantage
estimator, how the policy loss is aggregated, whether a critic exists, where the KL goes and
with which estimator, the clip range's upper side, and whether degenerate groups are resampled.
The learner reads these fields; it has no branch per algorithm name.

=============  ============  ==========  ======  =======  ==============================
name           advantage     loss agg    critic  KL in    notes
=============  ============  ==========  ======  =======  ==============================
ppo            gae           token_mean  yes     reward   advantages whitened (k1)
grpo           group         seq_mean    no      loss     (r - mean) / (std + eps), k3
dr_grpo        group         constant    no      loss     no std division, constant norm
dapo           group         token_mean  no      loss     clip-higher 0.28, dynamic sampling
rloo           rloo          token_mean  no      reward   leave-one-out baseline (k1)
reinforce_pp   reinforce_pp  token_mean  no      reward   returns whitened globally (k1)
=============  ============  ==========  ======  =======  ==============================
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from rayrlhf.algos.advantages import ADVANTAGE_ESTIMATORS
from rayrlhf.algos.aggregation import LOSS_AGGREGATIONS
from rayrlhf.algos.kl import KL_ESTIMATORS


@dataclass(frozen=True)
class Algorithm:
    """What an online algorithm needs from the learner and the driver."""

    advantage: str  # a key of ADVANTAGE_ESTIMATORS
    loss_agg: str  # a key of LOSS_AGGREGATIONS
    kl_in: Literal["reward", "loss"]  # KL as a per-token reward penalty or as a loss term
    kl_estimator: str  # a key of KL_ESTIMATORS
    whiten: bool  # normalise advantages over the global batch (all ranks' tokens)
    std_normalize: bool = True  # group advantage: divide by the group's std
    clip_high: float | None = None  # ε_high; None = the symmetric online.clip_range
    dynamic_sampling: bool = False  # drop all-equal-reward groups, fill the step from more prompts
    min_group_size: int = 1  # samples per prompt the estimator needs

    @property
    def critic(self) -> bool:
        """Whether a value model is built, trained, checkpointed and planned."""
        return self.advantage == "gae"


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("gae", "token_mean", "reward", "k1", whiten=True),
    "grpo": Algorithm("group", "seq_mean", "loss", "k3", whiten=False, min_group_size=2),
    "dr_grpo": Algorithm(
        "group", "constant", "loss", "k3", whiten=False, std_normalize=False, min_group_size=2
    ),
    "dapo": Algorithm(
        "group",
        "token_mean",
        "loss",
        "k3",
        whiten=False,
        clip_high=0.28,
        dynamic_sampling=True,
        min_group_size=2,
    ),
    "rloo": Algorithm("rloo", "token_mean", "reward", "k1", whiten=False, min_group_size=2),
    "reinforce_pp": Algorithm("reinforce_pp", "token_mean", "reward", "k1", whiten=True),
}


def resolve(name: str, **overrides: Any) -> Algorithm:
    """The algorithm ``name`` with the given fields replaced (``None`` values keep the preset).

    Raises:
        ValueError: An unknown name, field or table key.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    known = {f.name for f in fields(Algorithm)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown algorithm fields {sorted(unknown)}")
    algo = replace(ALGORITHMS[name], **{k: v for k, v in overrides.items() if v is not None})
    for value, table, what in (
        (algo.advantage, ADVANTAGE_ESTIMATORS, "advantage estimator"),
        (algo.loss_agg, LOSS_AGGREGATIONS, "loss aggregation"),
        (algo.kl_estimator, KL_ESTIMATORS, "KL estimator"),
    ):
        if value not in table:
            raise ValueError(f"unknown {what} {value!r}; known: {', '.join(table)}")
    if algo.advantage in ("group", "rloo"):
        algo = replace(algo, min_group_size=max(algo.min_group_size, 2))
    return algo
