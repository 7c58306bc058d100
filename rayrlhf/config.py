"""The one typed config tree: loaded from YAML, overridden with dotted ``--set`` pairs, frozen.

Every field has a one-line description and a range; a bad value fails at start with the field's
dotted path and what is allowed (:class:`ConfigError`). Nothing else in the package reads YAML or
command-line strings: roles receive this frozen tree (or the section they need).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)


def _expand_path(value: str | None) -> str | None:
    """Expand ``~`` and ``$VARS``; make a path that exists here absolute.

    Actors may start in another working directory (or, under ``ray job submit``, another copy of
    it), so a relative path that resolves on the driver is pinned before the config is shipped.
    """
    if value is None:
        return None
    expanded = os.path.expandvars(os.path.expanduser(value))
    return os.path.abspath(expanded) if os.path.exists(expanded) else expanded


PathStr = Annotated[str, AfterValidator(_expand_path)]
Placement = Literal["pack", "spread"]


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad field's dotted path."""


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, not a silently ignored knob.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(_Section):
    """What the run is called, where it writes, and how long it lasts."""

    name: str = Field("ppo", min_length=1, description="Run name; the run directory's name.")
    output_dir: str = Field("runs", description="Folder that holds run directories.")
    seed: int = Field(0, ge=0, description="Seed for prompts order, sampling and init.")
    num_steps: int = Field(10, ge=1, description="PPO steps (generate → score → train → sync).")
    log_samples: int = Field(3, ge=0, description="Sample generations logged per step.")
    progress_bar: bool = Field(True, description="Show a progress bar over steps.")
    checkpoint_every: int = Field(
        0,
        ge=0,
        description="Checkpoint every N steps (0: only when stopped by a signal or an error).",
    )
    keep_checkpoints: int = Field(2, ge=1, description="Committed checkpoints kept (newest).")
    resume: Literal["auto", "must", "never"] = Field(
        "auto",
        description="auto: continue from the newest checkpoint if there is one; must: refuse "
        "to start without one; never: start afresh (the old checkpoints are removed).",
    )
    max_worker_restarts: int = Field(
        10, ge=0, description="Dead rollout/reward/reference actors replaced before giving up."
    )
    max_learner_restarts: int = Field(
        2, ge=0, description="Learner group restarts from the last checkpoint before giving up."
    )


class TimeoutsConfig(_Section):
    """Deadlines of the driver's blocking waits: a hang becomes an error naming role and phase."""

    setup_s: float = Field(1800.0, gt=0.0, description="Actors started and models loaded.")
    rollout_s: float = Field(
        1800.0, gt=0.0, description="A step's generation, scoring and reference log-probs."
    )
    train_s: float = Field(1800.0, gt=0.0, description="One learner step (also its collectives).")
    weight_sync_s: float = Field(600.0, gt=0.0, description="Weights reaching rollout workers.")
    checkpoint_s: float = Field(1800.0, gt=0.0, description="Writing or loading a checkpoint.")


class ModelConfig(_Section):
    """Which Hugging Face checkpoints play which part."""

    policy: PathStr = Field(
        ..., min_length=1, description="HF folder of the initial policy (causal LM)."
    )
    value: PathStr | None = Field(
        None, description="HF folder for the value backbone; default: policy."
    )
    tokenizer: PathStr | None = Field(None, description="HF tokenizer folder; default: policy.")


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


class DataConfig(_Section):
    """The prompts PPO generates from."""

    prompts: PathStr = Field(..., min_length=1, description="JSONL file of prompt rows.")
    prompt_key: str = Field("prompt", min_length=1, description="Field of a row holding the text.")
    max_bad_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Fail when more than this fraction of rows is malformed."
    )


class RolloutConfig(_Section):
    """Rollout workers: generation with the current policy."""

    num_workers: int = Field(
        1, ge=1, description="Rollout actors at start; independent of learner ranks, resizable."
    )
    prompts_per_step: int = Field(16, ge=1, description="Prompts generated per PPO step.")
    chunk_size: int = Field(8, ge=1, description="Prompts per generate call (the unit of work).")
    max_prompt_tokens: int = Field(64, ge=1, description="Longer prompts keep their last tokens.")
    template: Literal["auto", "chat", "plain"] = Field(
        "auto",
        description="How a prompt is shown to the policy, in SFT, PPO and evaluation alike: "
        "auto = the tokenizer's chat template when it has one, else plain_template.",
    )
    plain_template: str = Field(
        "{prompt}", description="Prompt text without a chat template; must contain {prompt}."
    )
    max_new_tokens: int = Field(24, ge=1, description="Response length limit in tokens.")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs reserved per rollout actor.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per rollout actor (fractions allowed).")
    placement: Placement = Field(
        "pack", description="Placement group strategy: pack onto few nodes or spread."
    )

    @model_validator(mode="after")
    def _template_has_prompt(self) -> RolloutConfig:
        if "{prompt}" not in self.plain_template:
            raise ValueError("plain_template must contain {prompt}")
        return self


class RewardConfig(_Section):
    """Reward workers: a sequence-classification model or a Python function."""

    num_workers: int = Field(1, ge=1, description="Reward actors.")
    model: PathStr | None = Field(None, description="HF sequence-classification folder.")
    function: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:function' taking (prompts, responses) → list of floats.",
    )
    batch_size: int = Field(32, ge=1, description="Pairs scored per model forward.")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs reserved per reward actor.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per reward actor (fractions allowed).")
    placement: Placement = Field(
        "pack", description="Placement group strategy: pack onto few nodes or spread."
    )

    @model_validator(mode="after")
    def _one_scorer(self) -> RewardConfig:
        if self.model is not None and self.function is not None:
            raise ValueError("set exactly one of reward.model or reward.function, not both")
        return self


class ReferenceConfig(_Section):
    """Reference workers: the frozen initial policy's log-probs for the KL penalty."""

    num_workers: int = Field(1, ge=1, description="Reference actors.")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs reserved per reference actor.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per reference actor.")
    placement: Placement = Field(
        "pack", description="Placement group strategy: pack onto few nodes or spread."
    )


class EngineConfig(_Section):
    """DeepSpeed learner ranks: process group, ZeRO, precision, batch shape (every stage)."""

    num_ranks: int = Field(1, ge=1, description="Learner actors in one torch.distributed group.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu uses gloo, cuda uses nccl.")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = Field(False, description="ZeRO optimizer states in CPU memory.")
    offload_params: bool = Field(False, description="ZeRO-3 parameters in CPU memory.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Training precision.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, ~30% more compute."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    minibatch_size: int = Field(8, ge=1, description="Samples per optimizer step, all ranks.")
    micro_batch_size: int = Field(8, ge=1, description="Samples per forward on one rank.")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs reserved per learner rank.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per learner rank.")
    placement: Placement = Field(
        "pack", description="Placement group strategy: pack onto few nodes or spread."
    )
    master_port: int = Field(0, ge=0, le=65535, description="torch.distributed port; 0 = free.")

    @property
    def backend(self) -> str:
        """torch.distributed backend for ``device``: gloo on cpu, nccl on cuda."""
        return "gloo" if self.device == "cpu" else "nccl"

    @model_validator(mode="after")
    def _device_fits(self) -> EngineConfig:
        if self.device == "cpu" and self.precision == "fp16":
            raise ValueError("precision fp16 needs device cuda (use fp32 or bf16 on cpu)")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.device == "cuda" and self.num_gpus <= 0:
            raise ValueError("device cuda needs num_gpus > 0 per learner rank")
        if self.minibatch_size % (self.num_ranks * self.micro_batch_size):
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) must be a multiple of "
                f"num_ranks × micro_batch_size ({self.num_ranks} × {self.micro_batch_size})"
            )
        return self


class LearnerConfig(EngineConfig):
    """The PPO learner ranks holding policy and value model."""

    policy_lr: float = Field(1e-5, gt=0.0, le=1.0, description="Policy AdamW learning rate.")
    value_lr: float = Field(1e-5, gt=0.0, le=1.0, description="Value AdamW learning rate.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each step's experience.")


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
    num_prompts: int = Field(64, ge=1, description="Prompts evaluated (the first N rows).")
    examples: int = Field(3, ge=0, description="Before/after examples printed at the end.")


class WeightSyncConfig(_Section):
    """How new policy weights reach the rollout workers after each update."""

    method: Literal["object_store", "broadcast"] = Field(
        "object_store",
        description="object_store: a state dict by reference; broadcast: buckets over a "
        "gloo/nccl group of learner rank 0 and the rollout workers.",
    )
    bucket_mb: float = Field(64.0, gt=0.0, description="Flat bucket size for broadcast (MiB).")


class PPOConfig(_Section):
    """PPO and KL-penalty hyper-parameters (names as in the papers)."""

    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount per token.")
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0, description="GAE λ.")
    clip_range: float = Field(0.2, gt=0.0, lt=1.0, description="Policy ratio clip ε.")
    value_clip_range: float = Field(0.2, gt=0.0, description="Value prediction clip.")
    value_coef: float = Field(0.5, ge=0.0, description="Weight of the value loss.")
    entropy_coef: float = Field(0.0, ge=0.0, description="Entropy bonus weight.")
    whiten_advantages: bool = Field(True, description="Normalise advantages over the batch.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="Per-token KL estimator.")
    kl_controller: Literal["fixed", "adaptive"] = Field("fixed", description="KL coefficient rule.")
    kl_coef: float = Field(0.05, ge=0.0, description="Initial KL penalty coefficient β.")
    kl_target: float = Field(6.0, gt=0.0, description="Adaptive controller's target KL (nats).")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive controller's horizon (samples).")
    reward_clip: float = Field(10.0, gt=0.0, description="Scores are clipped to ±this.")


class Config(_Section):
    """The whole run. Sections mirror the roles that read them."""

    run: RunConfig = RunConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    model: ModelConfig
    data: DataConfig
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    reference: ReferenceConfig = ReferenceConfig()
    learner: LearnerConfig = LearnerConfig()
    ppo: PPOConfig = PPOConfig()
    weight_sync: WeightSyncConfig = WeightSyncConfig()
    eval: EvalConfig = EvalConfig()
    # Pipeline stages (`rayrlhf pipeline`): SFT fine-tunes model.policy and PPO starts from the
    # result; the reward-model stage's output becomes reward.model.
    sft: SFTConfig | None = None
    reward_model: RewardModelConfig | None = None

    @model_validator(mode="after")
    def _reward_source(self) -> Config:
        given = self.reward.model is not None or self.reward.function is not None
        if self.reward_model is None and not given:
            raise ValueError(
                "set exactly one of reward.model or reward.function (or a reward_model stage "
                "for `rayrlhf pipeline`)"
            )
        if self.reward_model is not None and given:
            raise ValueError(
                "with a reward_model stage PPO scores with the model it trains: leave "
                "reward.model and reward.function unset"
            )
        return self

    @model_validator(mode="after")
    def _batch_shapes(self) -> Config:
        r, lrn = self.rollout, self.learner
        if r.prompts_per_step % r.chunk_size:
            raise ValueError(
                f"rollout.prompts_per_step ({r.prompts_per_step}) must be a multiple of "
                f"rollout.chunk_size ({r.chunk_size})"
            )
        chunks = r.prompts_per_step // r.chunk_size
        if chunks % lrn.num_ranks:
            raise ValueError(
                f"rollout.prompts_per_step / rollout.chunk_size = {chunks} chunks must split "
                f"evenly over learner.num_ranks ({lrn.num_ranks})"
            )
        if r.prompts_per_step % lrn.minibatch_size:
            raise ValueError(
                f"rollout.prompts_per_step ({r.prompts_per_step}) must be a multiple of "
                f"learner.minibatch_size ({lrn.minibatch_size})"
            )
        return self

    @property
    def tokenizer_path(self) -> str:
        """The tokenizer folder: ``model.tokenizer`` or the policy's."""
        return self.model.tokenizer or self.model.policy

    @property
    def value_path(self) -> str:
        """The value backbone's folder: ``model.value`` or the policy's."""
        return self.model.value or self.model.policy


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into its key path and a YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {item!r} has an empty key")
    return path, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each ``key.path=value`` set (sections made as needed)."""
    out: dict[str, Any] = _deep_copy(tree)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def from_dict(tree: dict[str, Any]) -> Config:
    """Validate a plain tree into a frozen :class:`Config`, or raise :class:`ConfigError`."""
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            got = (
                f" (got {e['input']!r})"
                if "input" in e and not isinstance(e["input"], dict)
                else ""
            )
            lines.append(f"  {where}: {e['msg']}{got}")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from None


def load(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML file (or nothing), apply dotted overrides, validate and freeze."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must hold a mapping at top level")
        tree = loaded
    return from_dict(apply_overrides(tree, overrides or []))


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data, for the run directory's ``config.yaml``."""
    return config.model_dump(mode="json")


def check_local_paths(config: Config) -> None:
    """Fail at start, naming the field, when a model or data path does not exist here.

    Called by the driver before any actor starts, so a typo costs seconds, not a cluster
    start-up and a traceback from inside an actor.
    """
    fields: dict[str, str | None] = {
        "model.policy": config.model.policy,
        "model.value": config.model.value,
        "model.tokenizer": config.model.tokenizer,
        "reward.model": config.reward.model,
        "data.prompts": config.data.prompts,
        "eval.prompts.path": config.eval.prompts and config.eval.prompts.path,
    }
    for name in ("sft", "reward_model"):
        stage = getattr(config, name)
        if stage is not None:
            fields[f"{name}.data.path"] = stage.data.path
            fields[f"{name}.heldout.path"] = stage.heldout and stage.heldout.path
    if config.reward_model is not None:
        fields["reward_model.model"] = config.reward_model.model
    bad = [
        f"  {k}: no such file or folder {v!r}"
        for k, v in fields.items()
        if v and not os.path.exists(v)
    ]
    if bad:
        raise ConfigError("invalid config:\n" + "\n".join(bad))
