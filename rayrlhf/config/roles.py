"""The PPO roles: model folders, prompts, reward, reference, learner, weight sync, PPO (the rollout
section is in :mod:`rayrlhf.config.rollout`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rayrlhf.config.base import PathStr, Placement, _Section, custom_resources
from rayrlhf.config.tasks import ReasoningGymConfig


class LoraConfig(_Section):
    """Low-rank adapters (peft) on the trained models: only the adapters (and a value model's
    head) train, and only the adapters travel to the rollout workers."""

    rank: int = Field(16, ge=1, description="Adapter rank r.")
    alpha: float = Field(32.0, gt=0.0, description="Scale numerator: updates are (alpha/r)·B·A.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt (e.g. [q_proj, v_proj]); all-linear: every linear "
        "layer but the output head.",
    )


class ModelConfig(_Section):
    """Which Hugging Face checkpoints play which part."""

    policy: PathStr = Field(
        ..., min_length=1, description="HF folder of the initial policy (causal LM)."
    )
    value: PathStr | None = Field(
        None, description="HF folder for the value backbone; default: policy."
    )
    tokenizer: PathStr | None = Field(None, description="HF tokenizer folder; default: policy.")
    lora: LoraConfig | None = Field(
        None, description="Train low-rank adapters instead of every weight (null: full)."
    )


class DataConfig(_Section):
    """The prompts PPO generates from: a table (``prompts``) or a reasoning-gym task."""

    prompts: PathStr | None = Field(None, min_length=1, description="JSONL file of prompt rows.")
    prompt_key: str = Field("prompt", min_length=1, description="Field of a row holding the text.")
    answer_key: str | None = Field(
        None,
        min_length=1,
        description="Field holding each prompt's reference answer, for verifying rewards "
        "(rayrlhf.rewards.verifiers); rows without it are skipped and counted.",
    )
    reasoning_gym: ReasoningGymConfig | None = Field(
        None, description="Prompts (with answers) from a reasoning-gym task instead of a file."
    )
    max_bad_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Fail when more than this fraction of rows is malformed."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.prompts is None) == (self.reasoning_gym is None):
            raise ValueError("set exactly one of data.prompts or data.reasoning_gym")
        if self.reasoning_gym is not None and self.answer_key is not None:
            raise ValueError("data.answer_key is for data.prompts; reasoning_gym rows hold theirs")
        return self


class RewardConfig(_Section):
    """Reward workers: a sequence-classification model, a Python function or an HTTP endpoint."""

    num_workers: int = Field(1, ge=1, description="Reward actors.")
    model: PathStr | None = Field(None, description="HF sequence-classification folder.")
    function: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:function' taking (prompts, responses) → list of floats.",
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="HTTP endpoint scoring batches (`rayrlhf serve-reward` speaks its protocol).",
    )
    # The token itself never enters the config (which is logged and saved with each run): only
    # where a reward worker reads it, on the machine where it runs.
    url_token_file: PathStr | None = Field(
        None,
        min_length=1,
        description="File holding the bearer token sent to reward.url (`serve-reward "
        "--token-file`).",
    )
    url_token_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the bearer token sent to reward.url.",
    )
    component_weights: dict[str, float] = Field(
        default_factory=dict,
        description="A function returning named components ({name: scores}): the reward is "
        "their sum with these weights (1 for a name not listed); each is logged as reward/NAME. "
        "Multi-turn episodes add env (weight 1) and tool_call (1 when the episode called a tool "
        "without error; weight 0 unless listed, e.g. {tool_call: 0.1} as a format reward).",
    )
    timeout_s: float = Field(60.0, gt=0.0, description="Deadline of one HTTP request.")
    retries: int = Field(3, ge=0, description="HTTP retries of a failed batch, with backoff.")
    batch_size: int = Field(32, ge=1, description="Pairs per model forward or HTTP request.")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs reserved per reward actor.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per reward actor (fractions allowed).")
    placement: Placement = Field(
        "pack", description="Placement group strategy: pack onto few nodes or spread."
    )
    resources: dict[str, float] = custom_resources()

    @model_validator(mode="after")
    def _one_scorer(self) -> RewardConfig:
        if sum(x is not None for x in (self.model, self.function, self.url)) > 1:
            raise ValueError("set exactly one of reward.model, reward.function or reward.url")
        if self.url is None and (self.url_token_file or self.url_token_env):
            raise ValueError("reward.url_token_file and reward.url_token_env need reward.url")
        if self.url_token_file and self.url_token_env:
            raise ValueError("set one of reward.url_token_file or reward.url_token_env, not both")
        return self


class ReferenceConfig(_Section):
    """Reference workers: the frozen initial policy's log-probs for the KL penalty."""

    mode: Literal["workers", "learner"] = Field(
        "workers",
        description="workers: reference actors hold a frozen copy; learner: the learner "
        "computes reference log-probs with its LoRA adapters disabled (needs model.lora).",
    )
    num_workers: int = Field(1, ge=1, description="Reference actors.")
    max_tokens_per_micro_batch: int = Field(
        0, ge=0, description="Token budget of one reference forward (0: rows of chunk size)."
    )
    packing: bool = Field(True, description="Forward rows packed without padding.")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs reserved per reference actor.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per reference actor.")
    placement: Placement = Field(
        "pack", description="Placement group strategy: pack onto few nodes or spread."
    )
    resources: dict[str, float] = custom_resources()


class EngineConfig(_Section):
    """DeepSpeed learner ranks: process group, ZeRO, precision, batch shape (every stage)."""

    num_ranks: int = Field(1, ge=1, description="Learner actors in one torch.distributed group.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu uses gloo, cuda uses nccl.")
    zero_stage: Literal[0, 1, 2, 3] = Field(
        2, description="DeepSpeed ZeRO stage (on one rank, 1 and 2 run as 0: nothing to shard)."
    )
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
    resources: dict[str, float] = custom_resources()
    master_port: int = Field(0, ge=0, le=65535, description="torch.distributed port; 0 = free.")
    packing: bool = Field(
        True,
        description="Forward rows packed end to end without padding (positions restart per "
        "row, attention stays within it); false: the padded layout.",
    )
    max_tokens_per_micro_batch: int = Field(
        0,
        ge=0,
        description="Token budget of one micro-batch: rows are bucketed by tokens, not rows "
        "(0: micro_batch_size rows).",
    )
    fused_optimizer: bool = Field(
        True, description="torch's fused AdamW kernel (one pass over all parameters)."
    )
    peak_tflops: float = Field(
        0.0,
        ge=0.0,
        description="The device's peak TFLOP/s for perf/mfu (0: measured once by a matmul probe).",
    )

    @property
    def effective_zero_stage(self) -> int:
        """The ZeRO stage the engines run: on one rank, stages 1 and 2 partition nothing and
        only copy every gradient into flat buffers and back, so they run as stage 0 (the
        learner floor benchmark measured 1.21× against 1.02× a plain loop). Stage 3 (loading
        partitioned) and optimizer offload (which needs ZeRO) keep their stage."""
        one_rank = self.num_ranks == 1 and not self.offload_optimizer
        return 0 if one_rank and self.zero_stage in (1, 2) else self.zero_stage

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


class WeightSyncConfig(_Section):
    """How new policy weights reach the rollout workers after each update."""

    method: Literal["object_store", "broadcast"] = Field(
        "object_store",
        description="object_store: a state dict by reference; broadcast: buckets over a "
        "gloo/nccl group of learner rank 0 and the rollout workers.",
    )
    bucket_mb: float = Field(64.0, gt=0.0, description="Flat bucket size for broadcast (MiB).")


class OnlineConfig(_Section):
    """The clipped policy gradient's and the KL's hyper-parameters, shared by every online
    algorithm (names as in the papers). The section is ``online``; ``ppo``, its old name, is
    still read."""

    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount per token.")
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0, description="GAE λ.")
    clip_range: float = Field(0.2, gt=0.0, lt=1.0, description="Policy ratio clip ε.")
    value_clip_range: float = Field(0.2, gt=0.0, description="Value prediction clip.")
    value_coef: float = Field(0.5, ge=0.0, description="Weight of the value loss.")
    entropy_coef: float = Field(0.0, ge=0.0, description="Entropy bonus weight.")
    kl_estimator: Literal["k1", "k2", "k3"] | None = Field(
        None, description="Per-token KL estimator; default: the algorithm's (k1, k3 in a loss)."
    )
    kl_controller: Literal["fixed", "adaptive"] = Field("fixed", description="KL coefficient rule.")
    kl_coef: float = Field(0.05, ge=0.0, description="Initial KL penalty coefficient β.")
    kl_target: float = Field(6.0, gt=0.0, description="Adaptive controller's target KL (nats).")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive controller's horizon (samples).")
    reward_clip: float = Field(10.0, gt=0.0, description="Scores are clipped to ±this.")
