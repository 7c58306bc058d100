"""Learner: one rank of the DeepSpeed group holding the policy (and, for PPO, the value model).

One class for every online algorithm. Each step a rank receives its own shard of chunk results
(object refs, resolved by this rank, never by the driver), computes old log-probs (and values when
the algorithm has a critic), rewards (KL-shaped when the KL sits in the reward), the algorithm's
advantages, and runs clipped policy-gradient epochs over minibatches, with the KL as a loss term
when it sits there. What to do comes from the config's :class:`rayrlhf.algos.algorithms.Algorithm`
(critic or not, estimator, loss aggregation, where the KL goes), never from the algorithm's name.
Batch statistics (advantage whitening, metrics, the KL that drives the controller) are
all-reduced, so every rank sees the same numbers whatever the rank count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from rayrlhf.algos.advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, AdvantageParams
from rayrlhf.algos.kl import KL_CONTROLLERS, KL_ESTIMATORS, token_rewards
from rayrlhf.algos.masking import masked_whiten
from rayrlhf.algos.off_policy import staleness_counts
from rayrlhf.buffer import fetch
from rayrlhf.checkpoint import load_rank_state, save_rank_state
from rayrlhf.config import Config
from rayrlhf.engine import (
    all_sum,
    build_engine,
    free_address,
    full_shapes,
    init_distributed,
    iter_full_params,
    load_engine,
    optimizer_digest,
    params_digest,
    partitioned_loading,
    save_engine,
    save_hf_model,
)
from rayrlhf.experience import RolloutBatch, join_chunks
from rayrlhf.models import (
    DTYPES,
    disable_dropout,
    load_policy,
    load_tokenizer,
    load_value_model,
    response_logprobs,
    response_values,
)
from rayrlhf.roles.policy_update import PolicyUpdate
from rayrlhf.roles.step_metrics import step_metrics
from rayrlhf.weight_sync import BroadcastGroup, FlatWeights, broadcast_params, flatten_params


class Learner:
    """One learner rank. Build ``num_ranks`` of them, call :meth:`setup` on all, then step."""

    def __init__(self, config: Config, rank: int = 0) -> None:
        self.config = config
        self.rank = rank
        self.world_size = config.learner.num_ranks
        self.device = torch.device(config.learner.device)
        self.policy_version = 0
        self.algo = config.algo
        kl = config.ppo
        self.kl_ctl = (
            KL_CONTROLLERS["fixed"](kl.kl_coef)
            if kl.kl_controller == "fixed"
            else KL_CONTROLLERS["adaptive"](kl.kl_coef, kl.kl_target, kl.kl_horizon)
        )

    rendezvous_address = staticmethod(free_address)  # called on rank 0 by the group

    def setup(self, master_addr: str, master_port: int) -> int:
        """Join the process group and build the DeepSpeed engines; returns this rank."""
        lc = self.config.learner
        torch.manual_seed(self.config.run.seed)  # identical value-head init on every rank
        init_distributed(lc, master_addr, master_port, self.rank, self.config.timeouts.train_s)
        critic = self.algo.critic  # a critic-free algorithm loads no value model at all
        with partitioned_loading(lc, lc.policy_lr):
            policy = load_policy(self.config.model.policy, "fp32")
            value = load_value_model(self.config.value_path, "fp32") if critic else None
        if lc.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
            if value is not None:
                value.backbone.gradient_checkpointing_enable()
        # from_pretrained returns eval mode, in which transformers skips gradient checkpointing:
        # train mode, with dropout off so learner and rollout log-probs agree.
        for model in (policy, value):
            if model is not None:
                disable_dropout(model).train()
        self.policy = build_engine(policy, lc.policy_lr, lc)
        self.value = build_engine(value, lc.value_lr, lc) if value is not None else None
        self.update = PolicyUpdate(
            self.config, self.policy, self.value, self.rank, self.world_size, self._all_sum
        )
        return self.rank

    def _engines(self) -> list[tuple[str, object]]:
        """(name, engine) of each engine this algorithm trains: policy, and value with a critic."""
        return [("policy", self.policy)] + ([("value", self.value)] if self.value else [])

    # ---- statistics over all ranks ------------------------------------------------------------

    def _all_sum(self, *xs: torch.Tensor | float) -> list[float]:
        return all_sum(list(xs), self.world_size)

    def _global_mean_var(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        m = mask.bool()
        s, sq, n = self._all_sum(x[m].sum(), (x[m].double() ** 2).sum(), m.sum())
        mean = s / max(n, 1.0)
        var = (sq / max(n, 1.0) - mean**2) * n / max(n - 1.0, 1.0)  # unbiased, like masked_var
        return mean, var

    # ---- one PPO step -------------------------------------------------------------------------

    def _forward_in_micro_batches(
        self, batch: RolloutBatch, with_logprobs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, R) old log-probs (None unless ``with_logprobs``) and values (None without a
        critic), without gradients."""
        mb = self.config.learner.micro_batch_size
        logps, values = [], []
        temp = self.config.rollout.temperature
        if not with_logprobs and self.value is None:
            return None, None
        with torch.no_grad():
            for i in range(0, len(batch), mb):
                ids = batch.input_ids[i : i + mb].to(self.device)
                am = batch.attention_mask[i : i + mb].to(self.device)
                if with_logprobs:
                    lp, _ = response_logprobs(self.policy, ids, am, batch.prompt_len, temp)
                    logps.append(lp.float().cpu())
                if self.value is not None:
                    values.append(response_values(self.value, ids, am, batch.prompt_len).cpu())
        mask = batch.response_mask
        return (
            torch.cat(logps) * mask if logps else None,
            torch.cat(values) * mask if values else None,
        )

    def _old_logprobs_first(self, batch: RolloutBatch) -> bool:
        """Whether the old log-probs must be computed before training: when the KL sits in the
        reward (the advantages read it), or when the step has several minibatches (an optimizer
        step would come before some rows' first forward). Otherwise the first epoch's own
        forward passes give them, and a whole forward pass a step is saved."""
        kl_in_reward = self.algo.kl_in == "reward" and batch.ref_logprobs is not None
        one_minibatch = len(batch) == self.config.learner.minibatch_size // self.world_size
        return kl_in_reward or not one_minibatch

    def train_step(
        self, rollouts: list, scores: list, refs: list, rows: list | None = None
    ) -> dict:
        """One step on this rank's shard; returns global metrics (identical on every rank).

        ``rollouts``, ``scores`` and ``refs`` are matching lists of chunk results (or object
        refs to them) for this rank only; ``refs`` holds ``None`` when no reference runs.
        ``rows[k]`` keeps only those rows (whole groups) of chunk k (dynamic sampling).
        """
        t0 = time.perf_counter()
        batch = join_chunks(fetch(rollouts), fetch(scores), fetch(refs), rows)
        k = self.config.rollout.max_staleness
        try:  # synchronous (k = 0): every sample must come from the learner's own version
            staleness = staleness_counts(batch.policy_versions, self.policy_version, k)
        except ValueError as err:
            raise RuntimeError(f"rank {self.rank}: {err}") from None
        t_fetch = time.perf_counter()
        kl_coef = self.kl_ctl.value
        first = self._old_logprobs_first(batch)
        old_logprobs, old_values = self._forward_in_micro_batches(batch, first)
        kl, adv, returns = self._advantages(batch, old_logprobs, old_values, kl_coef)
        t_values = time.perf_counter()
        losses, old_logprobs = self.update.run(
            batch, old_logprobs, old_values, adv, returns, self.policy_version, kl_coef
        )
        if kl is None and batch.ref_logprobs is not None:  # the KL of the captured log-probs
            kl = KL_ESTIMATORS[self.algo.kl_estimator](old_logprobs, batch.ref_logprobs)
            kl = kl * batch.response_mask
        t_train = time.perf_counter()
        self.policy_version += 1
        metrics = step_metrics(
            self.config,
            batch,
            old_logprobs,
            kl,
            losses,
            staleness,
            self.policy_version,
            self.world_size,
            self._all_sum,
        )
        if kl is not None:
            self.kl_ctl.update(metrics["kl/mean"], int(metrics["samples"]))
        metrics.update(
            {
                "kl/coef": kl_coef,  # the coefficient this step's rewards were shaped with
                "time/fetch": t_fetch - t0,
                "time/values": t_values - t_fetch,
                "time/train": t_train - t_values,
            }
        )
        metrics["samples_text"] = [
            {"sample_id": sid, "prompt": p, "response": r, "reward": float(sc)}
            for sid, p, r, sc in zip(
                batch.sample_ids, batch.prompts, batch.responses, batch.scores, strict=True
            )
        ][: self.config.run.log_samples]
        return metrics

    def _advantages(
        self,
        batch: RolloutBatch,
        old_logprobs: torch.Tensor | None,
        old_values: torch.Tensor | None,
        kl_coef: float,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(B, R) per-token KL to the reference (None without one, or when the old log-probs
        come later, from the first epoch), advantages and returns."""
        ppo, algo, mask = self.config.ppo, self.algo, batch.response_mask
        kl = None
        if batch.ref_logprobs is not None and old_logprobs is not None:
            kl = KL_ESTIMATORS[algo.kl_estimator](old_logprobs, batch.ref_logprobs) * mask
        scores = batch.scores.clamp(-ppo.reward_clip, ppo.reward_clip)
        in_reward = kl is not None and algo.kl_in == "reward"
        penalty = kl if in_reward else torch.zeros_like(batch.logprobs)
        rewards = token_rewards(scores, penalty, mask, kl_coef if in_reward else 0.0)
        params = AdvantageParams(
            ppo.gamma, ppo.gae_lambda, algo.std_normalize, self.config.algorithm.group_eps
        )
        inputs = AdvantageInputs(rewards, mask, batch.group_index, old_values)
        adv, returns = ADVANTAGE_ESTIMATORS[algo.advantage](inputs, params)
        if algo.whiten:
            # Statistics over all ranks' tokens: the same normalisation whatever the rank count.
            mean, var = self._global_mean_var(adv, mask)
            adv = masked_whiten(adv, mask, mean=torch.tensor(mean), var=torch.tensor(var))
        return kl, adv, returns

    # ---- weights --------------------------------------------------------------------------------

    def _full_policy(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter_full_params(self.policy, self.config.learner.zero_stage)

    def _rank0_full_policy(self) -> Iterator[tuple[str, torch.Tensor]] | None:
        """The full parameters on rank 0; elsewhere None, after taking part in every gather."""
        params = self._full_policy()
        if self.rank == 0:
            return params
        for _ in params:
            pass
        return None

    def policy_state_dict(self) -> FlatWeights | None:
        """Full policy weights in the rollout dtype on rank 0 (None elsewhere).

        Every rank must call it: under ZeRO-3 the parameters are gathered collectively.
        """
        params = self._rank0_full_policy()
        if params is None:
            return None
        return flatten_params(
            params, full_shapes(self.policy), DTYPES[self.config.learner.precision]
        )

    def policy_checksum(self) -> float:
        """Sum of the full policy parameters (collective); equal on every rank when consistent."""
        return float(sum(t.double().sum() for _, t in self._full_policy()))

    def join_sync_group(self, host: str, port: int, world_size: int) -> int:
        """Rank 0 only: become rank 0 of the weight broadcast group with the rollout workers."""
        self.sync_group = BroadcastGroup(self.config.learner.backend, host, port, 0, world_size)
        return world_size

    def broadcast_policy(self) -> int:
        """Broadcast the full policy to the rollout workers; every rank calls (ZeRO-3 gathers).

        Returns the bytes sent (0 on ranks other than 0, which only take part in the gathers).
        """
        params = self._rank0_full_policy()
        if params is None:
            return 0
        return broadcast_params(
            self.sync_group,
            params,
            full_shapes(self.policy),
            DTYPES[self.config.learner.precision],  # the rollout workers' dtype
            int(self.config.weight_sync.bucket_mb * 2**20),
            self.device,
        )

    def save_policy(self, path: str) -> bool:
        """Save the trained policy and its tokenizer as an HF folder (collective; rank 0 writes)."""
        wrote = save_hf_model(self.policy, self.config.learner.zero_stage, self.rank, path)
        if wrote:
            load_tokenizer(self.config.tokenizer_path).save_pretrained(path)
        return wrote

    # ---- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, path: str) -> int:
        """Write this rank's part of a checkpoint under ``path``; every rank calls (collective).

        DeepSpeed's state of each engine (weights, optimizer, ZeRO partitions), then this
        rank's policy version, KL controller and random generators. Returns the rank.
        """
        for name, engine in self._engines():
            save_engine(engine, f"{path}/{name}")
        state = {"policy_version": self.policy_version, "kl_controller": self.kl_ctl.state_dict()}
        save_rank_state(path, self.rank, state)
        return self.rank

    def load_checkpoint(self, path: str) -> int:
        """Restore this rank's part of the checkpoint at ``path``; returns its policy version."""
        for name, engine in self._engines():
            load_engine(engine, f"{path}/{name}")
        state = load_rank_state(path, self.rank)
        self.policy_version = int(state["policy_version"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        return self.policy_version

    def state_digest(self) -> dict[str, str]:
        """sha256 of the full parameters and of this rank's optimizer state, per engine.

        Equal digests mean ``torch.equal`` tensors: what the exact-resume tests compare.
        """
        stage = self.config.learner.zero_stage
        digests = {}
        for name, engine in self._engines():
            digests[f"{name}/params"] = params_digest(engine, stage)
            digests[f"{name}/optimizer"] = optimizer_digest(engine)
        return digests
