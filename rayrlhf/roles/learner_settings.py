"""The online learner's contract: its settings, resolved once from the config's sections, and
the typed bundle of one step's tensors.

The algorithm's numbers live in three sections of the config (``algorithm``, its resolved
preset :attr:`Config.algo`, and ``online``'s shared hyper-parameters); the learner and the policy
update read them only from :class:`LearnerSettings`, so each is resolved in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rayrlhf.algos.algorithms import Algorithm
from rayrlhf.algos.rollout_correction import DEFAULT_CAPS
from rayrlhf.config import Config, EngineConfig, LoraConfig


@dataclass(frozen=True)
class LearnerSettings:
    """Everything an online learner rank reads from the config."""

    algo: Algorithm  # estimator, loss aggregation, where the KL goes, critic or not
    engine: EngineConfig  # ranks, ZeRO, precision, batch shapes, learning rates
    seed: int
    train_timeout_s: float
    policy_path: str
    value_path: str
    tokenizer_path: str
    # LoRA: adapters on the policy (and on the value model's own backbone); None: full training.
    lora: LoraConfig | None
    # reference.mode learner: the learner computes ref_logprobs itself, as the policy with its
    # adapters disabled (rayrlhf.lora.adapters_disabled); the refs it is given are None.
    reference_in_learner: bool
    # Sampling, as the rollout workers sampled (log-probs are of the tempered distribution).
    temperature: float
    max_staleness: int
    # The rollout's log-probs are the old policy's to float rounding: fresh samples from the
    # HF engine, which runs the learner's model class in the learner's precision.
    behaviour_is_old: bool
    group_size: int
    # Clipped policy gradient, value loss and rewards.
    clip_range: float
    value_clip_range: float
    value_coef: float
    entropy_coef: float
    reward_clip: float
    gamma: float
    gae_lambda: float
    group_eps: float
    loss_constant: float  # Dr. GRPO's normaliser: algorithm.loss_constant or max_new_tokens
    behaviour_weight_cap: float
    # The engine–trainer correction (rayrlhf.algos.rollout_correction): mode, C (or β), α.
    rollout_correction: str
    correction_cap: float
    correction_low: float
    # The KL to the reference and its controller.
    kl_controller: str
    kl_coef: float
    kl_target: float
    kl_horizon: int
    # What the metrics divide by and show.
    workers: dict[str, int]  # role → worker count (busy time per worker)
    log_samples: int
    weight_bucket_bytes: int

    @classmethod
    def from_config(cls, config: Config) -> LearnerSettings:
        """Resolve the settings of ``config``'s online learner."""
        a, p, r = config.algorithm, config.online, config.rollout
        return cls(
            algo=config.algo,
            engine=config.learner,
            seed=config.run.seed,
            train_timeout_s=config.timeouts.train_s,
            policy_path=config.model.policy,
            value_path=config.value_path,
            tokenizer_path=config.tokenizer_path,
            lora=config.model.lora,
            reference_in_learner=config.uses_reference and not config.reference_workers,
            temperature=r.temperature,
            max_staleness=r.max_staleness,
            # Not with a rollout correction: it compares the two, so the learner computes its own.
            behaviour_is_old=r.backend == "hf"
            and r.max_staleness == 0
            and a.rollout_correction == "none",
            group_size=r.group_size,
            clip_range=p.clip_range,
            value_clip_range=p.value_clip_range,
            value_coef=p.value_coef,
            entropy_coef=p.entropy_coef,
            reward_clip=p.reward_clip,
            gamma=p.gamma,
            gae_lambda=p.gae_lambda,
            group_eps=a.group_eps,
            loss_constant=float(a.loss_constant or r.max_new_tokens),
            behaviour_weight_cap=a.behaviour_weight_cap,
            rollout_correction=a.rollout_correction,
            correction_cap=a.rollout_correction_cap or DEFAULT_CAPS.get(a.rollout_correction, 1.0),
            correction_low=a.rollout_correction_low,
            kl_controller=p.kl_controller,
            kl_coef=p.kl_coef,
            kl_target=p.kl_target,
            kl_horizon=p.kl_horizon,
            workers={
                "rollout": r.num_workers,
                "reward": config.reward.num_workers,
                # In the learner, the reference's busy time is summed over its ranks.
                "reference": config.reference.num_workers
                if config.reference_workers
                else config.learner.num_ranks,
            },
            log_samples=config.run.log_samples,
            weight_bucket_bytes=int(config.weight_sync.bucket_mb * 2**20),
        )


@dataclass
class StepTensors:
    """What a step computes before its update, one row per sample: (B, R) each, masked.

    ``old_logprobs`` is None until known: without a KL in the reward and with one minibatch a
    step, the first epoch's own forward passes give them (``capture``), a forward pass saved.
    """

    old_logprobs: torch.Tensor | None
    old_values: torch.Tensor | None  # None without a critic
    advantages: torch.Tensor
    returns: torch.Tensor
