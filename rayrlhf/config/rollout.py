"""The rollout section: generation, its engine (Hugging Face or vLLM) and how far it may run ahead
of training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rayrlhf.config.base import Placement, _Section, custom_resources


class VllmConfig(_Section):
    """The vLLM engine inside each rollout worker (``rollout.backend: vllm``)."""

    gpu_memory_utilization: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share of each rollout GPU vLLM takes for weights, activations and KV cache.",
    )
    max_model_len: int | None = Field(
        None, ge=8, description="Longest prompt + response; default max_prompt_tokens + new."
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one engine shards the policy over (rollout.num_gpus whole)."
    )
    sleep_between_steps: bool = Field(
        False,
        description="Free the KV cache and offload the weights while the learner trains "
        "(vLLM's sleep mode, CUDA only); off keeps the engine resident.",
    )
    enforce_eager: bool = Field(
        True, description="No CUDA graphs / compilation: faster start, slower decode on GPU."
    )
    cpu_kv_cache_gb: int = Field(
        1, ge=1, description="KV cache size of the CPU build, GiB (VLLM_CPU_KVCACHE_SPACE)."
    )


class RolloutConfig(_Section):
    """Rollout workers: generation with the current policy."""

    num_workers: int = Field(
        1, ge=1, description="Rollout actors at start; independent of learner ranks, resizable."
    )
    prompts_per_step: int = Field(
        16, ge=1, description="Prompts per step; a step trains on prompts × group_size samples."
    )
    group_size: int = Field(
        1, ge=1, description="Samples per prompt (GRPO's G), generated in one chunk."
    )
    chunk_size: int = Field(
        8, ge=1, description="Prompts per generate call (the unit of work; × group_size rows)."
    )
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
    resources: dict[str, float] = custom_resources()
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="Generation engine: Hugging Face generate, or vLLM (setup.sh --vllm)."
    )
    vllm: VllmConfig = VllmConfig()
    max_staleness: int = Field(
        0,
        ge=0,
        le=8,
        description="Steps generation may run ahead of training (0: synchronous); samples are "
        "at most this many policy versions old.",
    )

    environment: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:Class' of a multi-turn environment (rayrlhf.envs): episodes of "
        "turns and observations, e.g. rayrlhf.envs.calculator:CalculatorEnv; null: one turn.",
    )
    max_turns: int = Field(4, ge=1, description="Model turns per episode at most.")
    max_episode_tokens: int | None = Field(
        None,
        ge=1,
        description="An episode's response tokens at most, observations included (then it is "
        "truncated); default max_turns × (max_new_tokens + 16).",
    )

    @property
    def response_budget(self) -> int:
        """The longest response: one turn, or an episode's turns and observations."""
        if self.environment is None:
            return self.max_new_tokens
        return self.max_episode_tokens or self.max_turns * (self.max_new_tokens + 16)

    @model_validator(mode="after")
    def _template_has_prompt(self) -> RolloutConfig:
        if "{prompt}" not in self.plain_template:
            raise ValueError("plain_template must contain {prompt}")
        return self


class EnvWorkersConfig(_Section):
    """Environment workers: actors that run heavy environments (a sandboxed interpreter, a
    remote service) for the rollout workers, which send them each turn of a chunk's episodes."""

    num_workers: int = Field(
        0,
        ge=0,
        description="Environment actors (0: each rollout worker runs its episodes' environments "
        "itself, for light ones such as the calculator).",
    )
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs reserved per environment actor.")
    threads: int = Field(
        8,
        ge=1,
        description="Threads one call (a chunk's resets, or one turn of its episodes) steps its "
        "episodes on: tools that wait (a sandboxed subprocess, a service) overlap.",
    )
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per environment actor.")
    placement: Placement = Field(
        "pack", description="Placement group strategy: pack onto few nodes or spread."
    )
    resources: dict[str, float] = custom_resources()
    call_timeout_s: float = Field(
        600.0,
        gt=0.0,
        description="Deadline of one call (a chunk's resets or one turn's steps); past it the "
        "actor is treated as dead, replaced, and the chunk redone. Below timeouts.rollout_s, "
        "so that a hung environment worker is blamed, not the rollout worker waiting on it.",
    )
