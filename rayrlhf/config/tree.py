"""The whole config tree and the rules that span its sections."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from rayrlhf.algos.algorithms import Algorithm, resolve
from rayrlhf.config.algorithm import AlgorithmConfig
from rayrlhf.config.base import _Section
from rayrlhf.config.offline import DPOConfig, ILQLConfig
from rayrlhf.config.roles import (
    DataConfig,
    LearnerConfig,
    LoraConfig,
    ModelConfig,
    OnlineConfig,
    ReferenceConfig,
    RewardConfig,
    WeightSyncConfig,
)
from rayrlhf.config.rollout import EnvWorkersConfig, RolloutConfig
from rayrlhf.config.run import RunConfig, TimeoutsConfig
from rayrlhf.config.stages import EvalConfig, RewardModelConfig, SFTConfig


class Config(_Section):
    """The whole run. Sections mirror the roles that read them."""

    run: RunConfig = RunConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    model: ModelConfig
    data: DataConfig
    rollout: RolloutConfig = RolloutConfig()
    env_workers: EnvWorkersConfig = EnvWorkersConfig()
    reward: RewardConfig = RewardConfig()
    reference: ReferenceConfig = ReferenceConfig()
    learner: LearnerConfig = LearnerConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    online: OnlineConfig = OnlineConfig()
    weight_sync: WeightSyncConfig = WeightSyncConfig()
    eval: EvalConfig = EvalConfig()
    # Pipeline stages (`rayrlhf pipeline`): SFT fine-tunes model.policy and PPO starts from the
    # result; the reward-model stage's output becomes reward.model.
    sft: SFTConfig | None = None
    reward_model: RewardModelConfig | None = None
    # The third step: PPO (or GRPO, ...: the algorithm section) unless a dpo or an ilql
    # section is given (at most one of them).
    dpo: DPOConfig | None = None
    ilql: ILQLConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _old_section_names(cls, data: Any) -> Any:
        """``ppo`` is ``online``'s old name: a config file written for it still works (the two
        merged, ``online`` winning where both set a field)."""
        if isinstance(data, dict) and "ppo" in data:
            data = dict(data)
            old = data.pop("ppo") or {}
            data["online"] = {**old, **(data.get("online") or {})}
        return data

    @model_validator(mode="after")
    def _one_third_step(self) -> Config:
        if self.dpo is not None and self.ilql is not None:
            raise ValueError("give a dpo or an ilql section, not both: each is a third step")
        if self.ilql is not None and self.rollout.backend == "vllm":
            raise ValueError(
                "an ilql stage's policy decodes with its Q and V heads, which vLLM does not run: "
                "set rollout.backend: hf"
            )
        return self

    @model_validator(mode="after")
    def _reward_source(self) -> Config:
        r = self.reward
        given = r.model is not None or r.function is not None or r.url is not None
        if self.reward_model is None and not given:
            raise ValueError(
                "set exactly one of reward.model, reward.function or reward.url (or a "
                "reward_model stage for `rayrlhf pipeline`)"
            )
        if self.reward_model is not None and given:
            raise ValueError(
                "with a reward_model stage PPO scores with the model it trains: leave "
                "reward.model, reward.function and reward.url unset"
            )
        return self

    @model_validator(mode="after")
    def _env_workers_have_an_environment(self) -> Config:
        e = self.env_workers
        if e.num_workers and self.rollout.environment is None:
            raise ValueError("env_workers.num_workers > 0 needs rollout.environment (module:Class)")
        if e.num_workers and e.call_timeout_s >= self.timeouts.rollout_s:
            raise ValueError(
                f"env_workers.call_timeout_s ({e.call_timeout_s:g}) must be below "
                f"timeouts.rollout_s ({self.timeouts.rollout_s:g}): a hung environment worker "
                "would otherwise be blamed on the rollout worker waiting for it"
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
        samples = r.prompts_per_step * r.group_size
        if samples % lrn.minibatch_size:
            raise ValueError(
                f"rollout.prompts_per_step × rollout.group_size ({samples} samples a step) "
                f"must be a multiple of learner.minibatch_size ({lrn.minibatch_size})"
            )
        return self

    @model_validator(mode="after")
    def _algorithm_fits(self) -> Config:
        algo = self.algo  # raises on an unknown combination
        if self.rollout.group_size < algo.min_group_size:
            raise ValueError(
                f"algorithm {self.algorithm.name} (advantage {algo.advantage}) needs "
                f"rollout.group_size >= {algo.min_group_size}, got {self.rollout.group_size}"
            )
        if self.online.kl_controller == "adaptive" and self.online.kl_coef <= 0:
            raise ValueError("online.kl_controller adaptive needs online.kl_coef > 0")
        return self

    @model_validator(mode="after")
    def _rollout_fits(self) -> Config:
        r = self.rollout
        if r.max_staleness and self.weight_sync.method != "object_store":
            raise ValueError(
                "rollout.max_staleness > 0 needs weight_sync.method object_store: each chunk "
                "names the policy version it is generated with, and its worker loads that "
                "version from the object store when it differs from the one it holds"
            )
        need = r.max_prompt_tokens + r.response_budget
        if r.vllm.max_model_len is not None and r.vllm.max_model_len < need:
            raise ValueError(
                f"rollout.vllm.max_model_len ({r.vllm.max_model_len}) is shorter than "
                f"rollout.max_prompt_tokens + the longest response ({need})"
            )
        return self

    @model_validator(mode="after")
    def _lora_fits(self) -> Config:
        lora, mode = self.model.lora, self.reference.mode
        if mode == "learner" and lora is None:
            raise ValueError(
                "reference.mode learner computes the reference as the policy with its LoRA "
                "adapters disabled: it needs model.lora"
            )
        if mode == "learner" and not self.uses_reference:
            raise ValueError(
                "reference.mode learner needs an algorithm that uses a reference: "
                "online.kl_coef > 0 (with 0 no reference log-probs are computed)"
            )
        if mode == "learner" and (self.dpo is not None or self.ilql is not None):
            raise ValueError(
                "reference.mode learner is the online stage's: a dpo or ilql stage takes its "
                "reference from reference workers before training; leave reference.mode workers"
            )
        if lora is not None and self.ilql is not None:
            raise ValueError("model.lora is not supported by the ilql stage: remove model.lora")
        if lora is not None and lora.dropout > 0:
            if not any(s is not None and s.dropout for s in (self.sft, self.dpo)):
                raise ValueError(
                    f"model.lora.dropout {lora.dropout} would never apply: the learners train "
                    "without dropout (so learner and rollout log-probs agree) unless sft.dropout "
                    "or dpo.dropout is true; set model.lora.dropout 0"
                )
        return self

    @property
    def algo(self) -> Algorithm:
        """The online algorithm this config runs: its preset with this config's overrides."""
        a = self.algorithm
        return resolve(
            a.name,
            advantage=a.advantage,
            loss_agg=a.loss_agg,
            kl_in=a.kl_in,
            kl_estimator=self.online.kl_estimator,
            whiten=a.whiten,
            std_normalize=a.std_normalize,
            clip_high=a.clip_high,
            dynamic_sampling=a.dynamic_sampling,
        )

    @property
    def uses_reference(self) -> bool:
        """Reference workers run only when the KL has a weight: none with a coefficient of 0."""
        return self.online.kl_coef > 0

    @property
    def reference_workers(self) -> bool:
        """Whether the online stage starts reference workers: a KL with a weight, computed by
        workers (``reference.mode: learner`` has the learner compute it, adapters disabled)."""
        return self.uses_reference and self.reference.mode == "workers"

    @property
    def online_lora(self) -> LoraConfig | None:
        """The adapters the online stage trains, and its rollout workers hold and receive:
        ``model.lora``, unless the third step is offline (DPO, ILQL), whose evaluation's
        rollout workers load whole saved policies."""
        offline = self.dpo is not None or self.ilql is not None
        return None if offline else self.model.lora

    @property
    def tokenizer_path(self) -> str:
        """The tokenizer folder: ``model.tokenizer`` or the policy's."""
        return self.model.tokenizer or self.model.policy

    @property
    def value_path(self) -> str:
        """The value backbone's folder: ``model.value`` or the policy's."""
        return self.model.value or self.model.policy
