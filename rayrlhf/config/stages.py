"""Tables of training rows, the SFT and reward-model stages, held-out evaluation (the offline
third steps, DPO and ILQL, build on these in :mod:`rayrlhf.config.offline`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rayrlhf.config.base import PathStr, _Section
from rayrlhf.config.roles import EngineConfig
from rayrlhf.config.tasks import ReasoningGymConfig

TableFormat = Literal["auto", "jsonl", "csv", "parquet", "hf", "argilla"]


class TableConfig(_Section):
    """A table of training rows: JSONL, CSV, Parquet, a saved HF dataset, or an Argilla export.

    ``columns`` maps our column names (``prompt``, ``response``, ``chosen``, ...) to the file's;
    unmapped names are read as they are. ``auto`` picks the format from the file name
    (a folder is a saved HF dataset).
    """

    path: PathStr = Field(..., min_length=1, description="File or folder holding the rows.")
    format: TableFormat = Field("auto", description="auto: from the extension; folder = hf.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Our column name → the file's column name."
    )
    max_bad_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Fail when more than this fraction of rows is malformed."
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N good rows.")


OverlongRule = Literal["error", "truncate", "filter"]


class _StageConfig(_Section):
    """What SFT and reward-model training share: data, held-out split, schedule, learner."""

    data: TableConfig = Field(..., description="Training rows.")
    heldout: TableConfig | None = Field(
        None, description="Held-out rows; default: heldout_fraction of data, split by run.seed."
    )
    heldout_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="Share of data held out when heldout is unset."
    )
    max_prompt_tokens: int = Field(64, ge=1, description="Prompt length limit in tokens.")
    overlong_prompt: OverlongRule = Field(
        "error",
        description="A longer prompt: error (fail, naming the row), truncate (keep its last "
        "tokens) or filter (skip and count it).",
    )
    epochs: int = Field(1, ge=1, description="Passes over the training rows.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    lr: float = Field(2e-5, gt=0.0, le=1.0, description="AdamW learning rate.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps.")
    eval_every: int = Field(20, ge=1, description="Evaluate on held-out rows every N steps.")
    dropout: bool = Field(
        False,
        description="Keep the model's dropout while training. Off by default (as in TRL's "
        "reward trainer): runs are then reproducible and independent of the rank count.",
    )
    learner: EngineConfig = EngineConfig()

    @property
    def heldout_path(self) -> str:
        """The file the held-out rows come from (``heldout``, or ``data`` when split off it)."""
        return (self.heldout or self.data).path


def _check_room(stage: Any) -> Any:
    # A prompt at its limit must still leave tokens for the response (and special tokens).
    if stage.max_prompt_tokens + 4 > stage.max_tokens:
        raise ValueError(
            f"max_prompt_tokens ({stage.max_prompt_tokens}) must be at least 4 below max_tokens "
            f"({stage.max_tokens}) to leave room for the response"
        )
    return stage


class SFTConfig(_StageConfig):
    """Supervised fine-tuning on (prompt, response) rows; loss on response tokens only."""

    feedback: Literal["none", "accepted"] = Field(
        "none",
        description="none: every (prompt, response) row; accepted: (prompt, response, "
        "accepted) rows, training on the accepted ones only (the rest counted as filtered).",
    )

    max_tokens: int = Field(256, ge=2, description="Prompt + response limit (response is cut).")
    packing: bool = Field(False, description="Pack short rows into max_tokens-long sequences.")

    @model_validator(mode="after")
    def _room_for_response(self) -> SFTConfig:
        return _check_room(self)


class RewardModelConfig(_StageConfig):
    """A reward model trained from human feedback, saved as an HF sequence classifier."""

    model: PathStr = Field(..., min_length=1, description="HF folder of the base encoder/LM.")
    feedback: Literal["pairwise", "scalar", "binary"] = Field(
        "pairwise",
        description="pairwise (prompt, chosen, rejected[, tie]): Bradley–Terry; scalar "
        "(prompt, response, score): regression; binary (prompt, response, accepted).",
    )
    ties: Literal["half", "drop"] = Field(
        "half",
        description="Tied pairs: half = Bradley–Terry with target ½ (pulls the two rewards "
        "together); drop = skip them.",
    )
    normalize_scores: bool = Field(
        True, description="Scalar feedback: standardise targets with the training mean/std."
    )
    max_tokens: int = Field(128, ge=2, description="Prompt + response limit (response is cut).")
    lr: float = Field(5e-5, gt=0.0, le=1.0, description="AdamW learning rate.")

    @model_validator(mode="after")
    def _room_for_response(self) -> RewardModelConfig:
        return _check_room(self)


class EvalConfig(_Section):
    """Held-out evaluation of the policy before the first and after the last PPO step."""

    prompts: TableConfig | None = Field(None, description="Held-out prompts; unset: no eval.")
    reasoning_gym: ReasoningGymConfig | None = Field(
        None,
        description="Held-out prompts from a reasoning-gym task (another seed than data's; "
        "questions the training rows hold are dropped).",
    )
    num_prompts: int = Field(64, ge=1, description="Prompts evaluated (the first N rows).")
    examples: int = Field(3, ge=0, description="Before/after examples printed at the end.")
