"""The offline third steps: DPO and ILQL learn the policy from feedback rows, without rollouts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rayrlhf.config.base import PathStr
from rayrlhf.config.stages import _check_room, _StageConfig


class DPOConfig(_StageConfig):
    """Direct preference optimisation of the policy from pairwise rows (no reward model, no
    rollouts), the frozen reference being the policy it starts from (the SFT model)."""

    beta: float = Field(
        0.1, gt=0.0, description="β: how far the policy may move from the reference."
    )
    loss: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid: DPO (with label_smoothing, conservative DPO); ipo: IPO."
    )
    label_smoothing: float = Field(
        0.0,
        ge=0.0,
        lt=0.5,
        description="Conservative DPO's ε: labels taken as flipped with "
        "this probability (sigmoid loss only).",
    )
    ties: Literal["half", "drop"] = Field(
        "half",
        description="Tied pairs: half = target ½ (sigmoid) or margin 0 (ipo), pulling the two "
        "responses' log-ratios together; drop = skip them.",
    )
    max_tokens: int = Field(256, ge=2, description="Prompt + response limit (response is cut).")
    lr: float = Field(1e-6, gt=0.0, le=1.0, description="AdamW learning rate.")
    reference_logprobs: PathStr | None = Field(
        None,
        description="Folder of the reference's log-probs of every response; set by the stage "
        "(computed once by the reference workers), not by hand.",
    )

    @model_validator(mode="after")
    def _room_for_response(self) -> DPOConfig:
        if self.loss == "ipo" and self.label_smoothing > 0:
            raise ValueError("dpo.label_smoothing applies to the sigmoid loss only, not ipo")
        return _check_room(self)


class ILQLConfig(_StageConfig):
    """Implicit Language Q-Learning (trlX's formulation) from scored responses, offline.

    Defaults are trlX's (``default_ilql_config``). Its α = 0.001 moves the target Q heads very
    slowly, which suits its tens of thousands of steps; a run of a few dozen steps needs a
    larger α (the review demo copies the heads, α = 1, every few steps).
    """

    feedback: Literal["scalar", "pairwise", "binary"] = Field(
        "scalar",
        description="scalar (prompt, response, score); pairwise (prompt, chosen, rejected[, "
        "tie]): chosen +1, rejected −1, both 0 when tied (an Argilla export's corrections add "
        "rows scored +1); binary (prompt, response, accepted): +1 / −1.",
    )
    normalize_scores: bool = Field(
        True, description="Standardise scores with the training rows' mean and std (as trlX)."
    )
    gamma: float = Field(0.99, ge=0.0, le=1.0, description="γ: discount of V(s′) in Q's target.")
    tau: float = Field(0.7, gt=0.0, lt=1.0, description="τ: expectile of V's regression.")
    cql_scale: float = Field(0.1, ge=0.0, description="Weight of the CQL term.")
    awac_scale: float = Field(1.0, ge=0.0, description="Weight of AWAC behaviour cloning.")
    awac_beta: float = Field(
        0.0, ge=0.0, description="β in AWAC's weights exp(β·(Q − V)); 0: plain cloning (trlX)."
    )
    alpha: float = Field(
        0.001, gt=0.0, le=1.0, description="Polyak α: target ← α·Q + (1 − α)·target."
    )
    steps_for_target_q_sync: int = Field(
        5, ge=1, description="Optimizer steps between Polyak updates of the target Q heads."
    )
    two_qs: bool = Field(True, description="Two Q heads (the minimum is read), as trlX.")
    decode_beta: float = Field(
        1.0,
        ge=0.0,
        description="β of ILQL decoding, saved with the model: log π + β·(min target Q − V); "
        "0 samples from the policy itself.",
    )
    top_k: int = Field(
        20, ge=0, description="Decoding keeps the k best shifted tokens (0: all), saved too."
    )
    max_tokens: int = Field(256, ge=2, description="Prompt + response limit (response is cut).")
    lr: float = Field(5e-5, gt=0.0, le=1.0, description="AdamW learning rate.")

    @model_validator(mode="after")
    def _fits(self) -> ILQLConfig:
        if self.learner.zero_stage == 3:
            raise ValueError(
                "ilql.learner.zero_stage=3: the Polyak update of the target Q heads writes "
                "whole parameters in place on every rank; use zero_stage 1 or 2"
            )
        if self.learner.precision != "fp32" and self.alpha < 0.05:
            # A 16-bit target moves by α·(Q − target) per update: below half a 16-bit step
            # (2⁻⁹ of its size for bf16) the update rounds away and the target never moves.
            raise ValueError(
                f"ilql.alpha={self.alpha} with ilql.learner.precision={self.learner.precision}: "
                "16-bit target heads round such small Polyak updates away; use precision fp32 "
                "or alpha >= 0.05"
            )
        if self.data.format == "argilla" and self.feedback != "pairwise":
            raise ValueError("ilql: an Argilla export is pairwise feedback; set feedback: pairwise")
        return _check_room(self)
