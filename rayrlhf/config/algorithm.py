"""The online algorithm: a name from :data:`rayrlhf.algos.algorithms.ALGORITHMS`, plus overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rayrlhf.config.base import _Section

AlgorithmName = Literal["ppo", "grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp"]


class AlgorithmConfig(_Section):
    """Which online algorithm the learner runs. Unset fields take the named algorithm's preset
    (README, "Algorithms"); the remaining hyper-parameters (clip range, KL coefficient and
    controller, γ, λ, entropy bonus) are in the ``online`` section, shared by all of them."""

    name: AlgorithmName = Field("ppo", description="ppo, grpo, dr_grpo, dapo, rloo, reinforce_pp.")
    advantage: Literal["gae", "group", "rloo", "reinforce_pp"] | None = Field(
        None, description="Advantage estimator (gae needs a critic; the others have none)."
    )
    loss_agg: Literal["token_mean", "seq_mean", "constant"] | None = Field(
        None, description="Policy loss aggregation: token mean, per-sequence mean, constant."
    )
    kl_in: Literal["reward", "loss"] | None = Field(
        None, description="KL as a per-token reward penalty or as a term of the policy loss."
    )
    whiten: bool | None = Field(None, description="Normalise advantages over the global batch.")
    std_normalize: bool | None = Field(
        None, description="Group advantage divided by the group's std (False: Dr. GRPO)."
    )
    group_eps: float = Field(1e-6, gt=0.0, description="ε added to a group's std.")
    clip_high: float | None = Field(
        None, gt=0.0, lt=10.0, description="DAPO's ε_high; default: online.clip_range (symmetric)."
    )
    loss_constant: int | None = Field(
        None, ge=1, description="Dr. GRPO's normaliser C; default: rollout.max_new_tokens."
    )
    dynamic_sampling: bool | None = Field(
        None, description="Drop groups whose rewards are all equal; refill the step (DAPO)."
    )
    max_fill_rounds: int = Field(
        4, ge=1, description="Dynamic sampling: further generation rounds per step at most."
    )
    behaviour_weight_cap: float = Field(
        5.0,
        gt=1.0,
        description="rollout.max_staleness > 0: the decoupled objective's importance weight "
        "π_prox/π_behaviour is truncated at this value.",
    )
    rollout_correction: Literal["none", "tis", "seq_mask", "icepop"] = Field(
        "none",
        description="Weight each token by π_train/π_rollout against the engine–trainer gap: "
        "tis (truncated), seq_mask (sequence ratio, dropped above the cap), icepop (two-sided "
        "token mask); see rayrlhf.algos.rollout_correction.",
    )
    rollout_correction_cap: float | None = Field(
        None,
        gt=1.0,
        description="C of tis and seq_mask, β of icepop; default 2, 3 and 5 respectively.",
    )
    rollout_correction_low: float = Field(
        0.5, gt=0.0, lt=1.0, description="icepop's α: tokens whose π_train/π_rollout is below it."
    )
