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
from collections.abc import Callable, Iterator
from typing import Any

import torch

from rayrlhf.algos.advantages import ADVANTAGE_ESTIMATORS, AdvantageInputs, AdvantageParams
from rayrlhf.algos.kl import KL_CONTROLLERS, KL_ESTIMATORS, token_rewards
from rayrlhf.algos.masking import masked_whiten
from rayrlhf.algos.off_policy import staleness_counts
from rayrlhf.buffer import fetch
from rayrlhf.config import Config
from rayrlhf.engine import full_shapes, iter_full_params
from rayrlhf.experience import RolloutBatch, join_chunks
from rayrlhf.forward import response_logprobs, response_values
from rayrlhf.lora import adapters_disabled, is_adapter_name
from rayrlhf.micro_batches import local_micro_batches, row_costs
from rayrlhf.models import DTYPES, load_policy, load_tokenizer, load_value_model
from rayrlhf.perf import FlopCounter, probe_peak_tflops
from rayrlhf.roles.learner_settings import LearnerSettings, StepTensors
from rayrlhf.roles.policy_update import PolicyUpdate
from rayrlhf.roles.rank_engine import RankEngine
from rayrlhf.roles.step_metrics import StepRecord, step_metrics
from rayrlhf.weights.transport import BroadcastGroup, FlatWeights, broadcast_params, flatten_params


class Learner(RankEngine):
    """One learner rank. Build ``num_ranks`` of them, call :meth:`setup` on all, then step."""

    def __init__(self, config: Config, rank: int = 0) -> None:
        self.s = LearnerSettings.from_config(config)
        super().__init__(self.s.engine, rank, self.s.seed, self.s.train_timeout_s)
        self.policy_version = 0
        self.kl_ctl = (
            KL_CONTROLLERS["fixed"](self.s.kl_coef)
            if self.s.kl_controller == "fixed"
            else KL_CONTROLLERS["adaptive"](self.s.kl_coef, self.s.kl_target, self.s.kl_horizon)
        )

    def setup(self, master_addr: str, master_port: int) -> int:
        """Join the process group and build the DeepSpeed engines; returns this rank."""
        self.join_group(master_addr, master_port)
        lc, critic = self.s.engine, self.s.algo.critic  # critic-free: no value model at all

        def load() -> dict[str, torch.nn.Module]:
            # With LoRA the engines get the trainable parameters only (adapters, value head):
            # build_engine hands DeepSpeed what requires grad; the frozen base has no optimizer
            # state. LoRA dropout is zeroed with the rest (build_engines), as the rollout has none.
            models = {"policy": load_policy(self.s.policy_path, "fp32", self.s.lora)}
            if critic:
                models["value"] = load_value_model(self.s.value_path, "fp32", self.s.lora)
            return models

        lrs = {"policy": lc.policy_lr, "value": lc.value_lr}
        self.build_engines(load, {k: lrs[k] for k in ("policy", "value")[: 1 + critic]})
        self.policy = self.engines["policy"]
        self.value = self.engines.get("value")
        self.update = PolicyUpdate(self.s, self)
        self.flops = FlopCounter(self.policy.module, self.value.module if self.value else None)
        # Measured after the first train phase, not here: the other roles are loading their
        # models now and would share the cores with the probe.
        self.peak_tflops = lc.peak_tflops
        return self.rank

    def _global_mean_var(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        m = mask.bool()
        s, sq, n = self.all_sum(x[m].sum(), (x[m].double() ** 2).sum(), m.sum())
        mean = s / max(n, 1.0)
        var = (sq / max(n, 1.0) - mean**2) * n / max(n - 1.0, 1.0)  # unbiased, like masked_var
        return mean, var

    # ---- one step -----------------------------------------------------------------------------

    def _no_grad_pass(
        self, batch: RolloutBatch, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """(B, R) ``forward(ids, attention_mask)`` over this rank's rows in micro-batches,
        without gradients (no collective, so any split), 0 off the response mask."""
        lc = self.s.engine
        rows, costs = torch.arange(len(batch)), row_costs(batch.attention_mask, lc.packing)
        out = torch.zeros(batch.response_mask.shape)
        with torch.no_grad():
            for idx in local_micro_batches(
                rows, costs, lc.max_tokens_per_micro_batch, lc.micro_batch_size
            ):
                ids = batch.input_ids[idx].to(self.device)
                out[idx] = forward(ids, batch.attention_mask[idx].to(self.device)).float().cpu()
        return out * batch.response_mask

    def _policy_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """(B, R) the policy's log-probs of the response tokens, without gradients."""
        return self._no_grad_pass(
            batch,
            lambda ids, am: response_logprobs(
                self.policy,
                ids,
                am,
                batch.prompt_len,
                self.s.temperature,
                packed=self.s.engine.packing,
            )[0],
        )

    def _forward_in_micro_batches(
        self, batch: RolloutBatch, with_logprobs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, R) old log-probs (None unless ``with_logprobs``) and values (None without a
        critic), without gradients."""
        value = self.value
        values = (
            self._no_grad_pass(
                batch,
                lambda ids, am: response_values(
                    value, ids, am, batch.prompt_len, self.s.engine.packing
                ),
            )
            if value is not None
            else None
        )
        return (self._policy_logprobs(batch) if with_logprobs else None), values

    def _reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """(B, R) the frozen base's log-probs: the policy with its LoRA adapters disabled, which
        is the reference a reference worker holds, without a second copy of the model. Its
        seconds count as the step's reference phase."""
        start = time.perf_counter()
        with adapters_disabled(self.policy.module):
            out = self._policy_logprobs(batch)
        generate, score, _ = batch.phase_seconds
        batch.phase_seconds = (generate, score, time.perf_counter() - start)
        return out

    def _old_logprobs_first(self, batch: RolloutBatch) -> bool:
        """Whether the old log-probs must be computed before training: when the step has several
        minibatches (an optimizer step would come before some rows' first forward), or when the
        KL sits in the reward (the advantages read it) and the rollout's log-probs are not the
        old ones to float rounding. Otherwise the first epoch's own forward passes give them,
        and a whole forward pass a step is saved."""
        kl_in_reward = self.s.algo.kl_in == "reward" and batch.ref_logprobs is not None
        one_minibatch = len(batch) == self.s.engine.minibatch_size // self.world_size
        return (kl_in_reward and not self.s.behaviour_is_old) or not one_minibatch

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
        try:  # synchronous (k = 0): every sample must come from the learner's own version
            staleness = staleness_counts(
                batch.policy_versions, self.policy_version, self.s.max_staleness
            )
        except ValueError as err:
            raise RuntimeError(f"rank {self.rank}: {err}") from None
        t_fetch = time.perf_counter()
        if self.s.reference_in_learner:  # reference.mode learner: no workers sent any
            batch.ref_logprobs = self._reference_logprobs(batch)
        kl_coef = self.kl_ctl.value
        old_logprobs, old_values = self._forward_in_micro_batches(
            batch, self._old_logprobs_first(batch)
        )
        kl, tensors = self._advantages(batch, old_logprobs, old_values, kl_coef)
        t_values = time.perf_counter()
        losses, old_logprobs = self.update.run(batch, tensors, self.policy_version, kl_coef)
        if kl is None and batch.ref_logprobs is not None:  # the KL of the captured log-probs
            kl = KL_ESTIMATORS[self.s.algo.kl_estimator](old_logprobs, batch.ref_logprobs)
            kl = kl * batch.response_mask
        t_train = time.perf_counter()
        self.policy_version += 1
        metrics = step_metrics(
            self.s,
            StepRecord(batch, old_logprobs, kl, losses, staleness, self.policy_version),
            self.all_sum_named,
        )
        if kl is not None:
            self.kl_ctl.update(metrics["kl/mean"], int(metrics["samples"]))
        metrics.update(self._perf(batch, t_train - t_values))
        metrics.update(
            {
                "kl/coef": kl_coef,  # the coefficient this step's rewards were shaped with
                "time/fetch": t_fetch - t0,
                "time/values": t_values - t_fetch,
                "time/train": t_train - t_values,
            }
        )
        metrics["samples_text"] = [
            {"sample_id": sid, "prompt": p, "response": r, "reward": float(sc), "policy_version": v}
            for sid, p, r, sc, v in zip(
                batch.sample_ids,
                batch.prompts,
                batch.responses,
                batch.scores,
                batch.policy_versions.tolist(),
                strict=True,
            )
        ][: self.s.log_samples]
        return metrics

    def _perf(self, batch: RolloutBatch, train_s: float) -> dict[str, float]:
        """The train phase's tokens/s, padding, achieved TFLOP/s per rank and MFU."""
        lc, real = self.s.engine, batch.attention_mask.sum(-1)
        epochs = lc.ppo_epochs
        t = self.all_sum_named(
            {
                "flops": self.flops.train_flops(real, int(batch.response_mask.sum()), epochs),
                "real": real.sum(),
                "slots": real.sum() if lc.packing else batch.attention_mask.numel(),
            }
        )
        if not self.peak_tflops:
            self.peak_tflops = probe_peak_tflops(self.device, DTYPES[lc.precision])
        tflops = t["flops"] / max(train_s, 1e-9) / self.world_size / 1e12
        return {
            "perf/padding_fraction": 1.0 - t["real"] / max(t["slots"], 1.0),
            "perf/train_tokens_per_s": t["real"] * epochs / max(train_s, 1e-9),
            "perf/train_tflops": tflops,
            "perf/mfu": tflops / self.peak_tflops,
            "perf/peak_tflops": self.peak_tflops,
        }

    def _advantages(
        self,
        batch: RolloutBatch,
        old_logprobs: torch.Tensor | None,
        old_values: torch.Tensor | None,
        kl_coef: float,
    ) -> tuple[torch.Tensor | None, StepTensors]:
        """(B, R) per-token KL to the reference (None without one, or when the old log-probs
        come later, from the first epoch), and the step's tensors with advantages and returns."""
        s, algo, mask = self.s, self.s.algo, batch.response_mask
        kl, old = None, old_logprobs
        if old is None and algo.kl_in == "reward" and s.behaviour_is_old:
            # The HF sampler's log-probs under the learner's weights: the old ones to float
            # rounding (rollout/logprob_mismatch, about 3e-6 in the demo, shows how close).
            old = batch.logprobs
        if batch.ref_logprobs is not None and old is not None:
            kl = KL_ESTIMATORS[algo.kl_estimator](old, batch.ref_logprobs) * mask
        scores = batch.scores.clamp(-s.reward_clip, s.reward_clip)
        in_reward = kl is not None and algo.kl_in == "reward"
        penalty = kl if in_reward else torch.zeros_like(batch.logprobs)
        rewards = token_rewards(scores, penalty, mask, kl_coef if in_reward else 0.0)
        params = AdvantageParams(s.gamma, s.gae_lambda, algo.std_normalize, s.group_eps)
        inputs = AdvantageInputs(rewards, mask, batch.group_index, old_values)
        adv, returns = ADVANTAGE_ESTIMATORS[algo.advantage](inputs, params)
        if algo.whiten:
            # Statistics over all ranks' tokens: the same normalisation whatever the rank count.
            mean, var = self._global_mean_var(adv, mask)
            adv = masked_whiten(adv, mask, mean=torch.tensor(mean), var=torch.tensor(var))
        return kl, StepTensors(old_logprobs, old_values, adv, returns)

    # ---- weights --------------------------------------------------------------------------------

    def _full_policy(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter_full_params(self.policy, self.s.engine.zero_stage)

    def _synced(self) -> Callable[[str], bool] | None:
        """Which parameters travel to the rollout workers: with LoRA the adapters only (the
        workers hold the same frozen base), else all."""
        return is_adapter_name if self.s.lora is not None else None

    def _rank0_synced_policy(self) -> Iterator[tuple[str, torch.Tensor]] | None:
        """The full parameters that travel, on rank 0; elsewhere None, after taking part in
        every gather."""
        params = iter_full_params(self.policy, self.s.engine.zero_stage, self._synced())
        if self.rank == 0:
            return params
        for _ in params:
            pass
        return None

    def policy_state_dict(self) -> FlatWeights | None:
        """The policy weights that travel (all, or LoRA's adapters), full and in the rollout
        dtype, on rank 0 (None elsewhere).

        Every rank must call it: under ZeRO-3 the parameters are gathered collectively.
        """
        params = self._rank0_synced_policy()
        if params is None:
            return None
        shapes = full_shapes(self.policy, self._synced())
        return flatten_params(params, shapes, DTYPES[self.s.engine.precision])

    def policy_checksum(self) -> float:
        """Sum of the full policy parameters (collective); equal on every rank when consistent."""
        return float(sum(t.double().sum() for _, t in self._full_policy()))

    def join_sync_group(self, host: str, port: int, world_size: int) -> int:
        """Rank 0 only: become rank 0 of the weight broadcast group with the rollout workers."""
        self.sync_group = BroadcastGroup(self.s.engine.backend, host, port, 0, world_size)
        return world_size

    def broadcast_policy(self) -> int:
        """Broadcast the policy (all, or LoRA's adapters) to the rollout workers; every rank
        calls (ZeRO-3 gathers).

        Returns the bytes sent (0 on ranks other than 0, which only take part in the gathers).
        """
        params = self._rank0_synced_policy()
        if params is None:
            return 0
        return broadcast_params(
            self.sync_group,
            params,
            full_shapes(self.policy, self._synced()),
            DTYPES[self.s.engine.precision],  # the rollout workers' dtype
            self.s.weight_bucket_bytes,
            self.device,
        )

    def save_policy(self, path: str) -> bool:
        """Save the trained policy and its tokenizer as an HF folder (collective; rank 0 writes).

        With LoRA the folder holds the merged model, and ``<path>_adapter`` beside it peft's
        adapter folder (:meth:`RankEngine.save_hf`)."""
        wrote = self.save_hf("policy", path)
        if wrote:
            load_tokenizer(self.s.tokenizer_path).save_pretrained(path)
        return wrote

    # ---- checkpoints: the engines are the rank engine's; these are the learner's own ---------

    def rank_state(self) -> dict[str, Any]:
        """The policy version and the KL controller."""
        return {"policy_version": self.policy_version, "kl_controller": self.kl_ctl.state_dict()}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`rank_state` returned."""
        self.policy_version = int(state["policy_version"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
