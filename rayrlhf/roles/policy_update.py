"""The policy-gradient update of one learner rank: epochs over minibatches of a step's batch.

One class for every online algorithm: the clipped surrogate with the algorithm's loss
aggregation and clip range, the KL as a loss term where the algorithm puts it there, the entropy
bonus, and the value loss when the algorithm has a critic. Every loss is divided by the global
minibatch's count of its units (tokens, or rows), summed over ranks and micro-batches, so the
update does not depend on how a minibatch is split.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from rayrlhf.algos.aggregation import LOSS_AGGREGATIONS, aggregate
from rayrlhf.algos.kl import KL_ESTIMATORS
from rayrlhf.algos.losses import policy_loss, value_loss
from rayrlhf.algos.masking import masked_mean
from rayrlhf.algos.off_policy import behaviour_weights
from rayrlhf.algos.rollout_correction import correction_stats, correction_weights
from rayrlhf.engine import grad_norm
from rayrlhf.experience import RolloutBatch
from rayrlhf.forward import response_logprobs, response_values
from rayrlhf.micro_batches import row_costs
from rayrlhf.roles.learner_settings import LearnerSettings, StepTensors
from rayrlhf.roles.rank_engine import RankEngine


class PolicyUpdate:
    """Trains the rank's ``policy`` engine (and its ``value`` engine, with a critic) on one
    step's batch; ``rank`` gives the all-reduce, the loss-rescaling rule and the guard."""

    def __init__(self, settings: LearnerSettings, rank: RankEngine) -> None:
        self.s, self.rank = settings, rank
        self.policy_version = 0  # set before each run: the minibatch order's seed, messages
        self.kl_coef = 0.0

    def run(
        self,
        batch: RolloutBatch,
        tensors: StepTensors,
        policy_version: int,
        kl_coef: float,
    ) -> tuple[dict[str, float], torch.Tensor]:
        """Run ``learner.ppo_epochs`` epochs; this rank's mean of each loss metric, and the
        (B, R) old log-probs.

        ``tensors.old_logprobs=None`` takes them from the first epoch's own forward passes (TRL
        does the same with one iteration): valid only when one minibatch covers the step, so
        that no optimizer step happens before every row's first forward; the learner checks it.
        """
        self.policy_version, self.kl_coef = policy_version, kl_coef
        capture = tensors.old_logprobs is None
        if capture:
            tensors.old_logprobs = torch.zeros_like(batch.logprobs)
        means = self._epochs(batch, tensors, capture)
        assert tensors.old_logprobs is not None
        return means, tensors.old_logprobs

    def _engines(self) -> list[tuple[str, Any]]:
        return list(self.rank.engines.items())

    def _epochs(self, batch: RolloutBatch, t: StepTensors, capture: bool) -> dict[str, float]:
        """Clipped policy gradient (and value) epochs over minibatches; this rank's mean of each
        loss metric.

        The engines are stepped after every micro-batch; DeepSpeed applies the update at each
        gradient-accumulation boundary, i.e. once per ``learner.minibatch_size`` samples.
        Losses are divided by the global minibatch's count of the aggregation's units (tokens for
        a token mean, rows for a per-sequence mean or a constant normaliser) summed over all
        ranks and micro-batches, so the update does not depend on how the minibatch is split.
        """
        lc, algo = self.s.engine, self.s.algo
        per_rank = lc.minibatch_size // self.rank.world_size
        gen = torch.Generator().manual_seed(self.s.seed * 100003 + self.policy_version)
        orders = [torch.randperm(len(batch), generator=gen) for _ in range(lc.ppo_epochs)]
        units = {
            "policy": LOSS_AGGREGATIONS[algo.loss_agg].units(
                batch.response_mask, self.s.loss_constant
            ),
            "value": batch.response_mask.sum(-1).double(),  # the value loss is a token mean
        }
        engines = self._engines()
        minibatches = [
            (epoch, start, order[start : start + per_rank])
            for epoch, order in enumerate(orders)
            for start in range(0, len(batch), per_rank)
        ]
        # Each minibatch's units over all ranks, for every engine: one all-reduce a step.
        local = {
            f"{name}/{e}/{i}": units[name][rows].sum()
            for name, _ in engines
            for e, i, rows in minibatches
        }
        global_units = self.rank.all_sum_named(local)
        plan = self.rank.micro_batch_plan(
            [rows for _, _, rows in minibatches],
            row_costs(batch.attention_mask, lc.packing),
        )
        sums: dict[str, float] = defaultdict(float)
        norms: dict[str, float] = defaultdict(float)
        count = steps = 0
        for (epoch, first, _), micro_batches in zip(minibatches, plan, strict=True):
            for k, idx in enumerate(micro_batches):
                weights = {
                    name: self.rank.loss_share(
                        float(units[name][idx].sum()), global_units[f"{name}/{epoch}/{first}"]
                    )
                    for name, _ in engines
                }
                boundary = k == len(micro_batches) - 1  # the minibatch's optimizer step
                for _, engine in engines:
                    engine.set_gradient_accumulation_boundary(boundary)
                stats = self._micro_step(batch, t, idx, weights, capture and epoch == 0)
                for key, v in stats.items():
                    sums[key] += v
                count += 1
            steps += 1
            for name, engine in engines:  # an optimizer step: its global gradient norms
                norms[f"{name}/grad_norm"] += grad_norm(engine)
        means = {key: v / max(count, 1) for key, v in sums.items()}
        # Global already (DeepSpeed reduces them), so equal on every rank: a loss scale that
        # depends on the rank count shows here even where Adam hides it in the parameters.
        means.update({key: v / max(steps, 1) for key, v in norms.items()})
        return means

    def _micro_step(
        self,
        batch: RolloutBatch,
        t: StepTensors,
        idx: torch.Tensor,
        weights: dict[str, float],
        capture: bool = False,
    ) -> dict[str, float]:
        """Forward, backward and (at accumulation boundaries) step of each engine.

        ``weights[engine]`` rescales this micro-batch's losses to its share of the minibatch;
        ``capture``: these rows' old log-probs are this forward's, written into the bundle.
        """
        s, algo, device = self.s, self.s.algo, self.rank.device
        policy = self.rank.engines["policy"]
        ids = batch.input_ids[idx].to(device)
        am = batch.attention_mask[idx].to(device)
        mask = batch.response_mask[idx].to(device)
        packed = s.engine.packing
        logprobs, entropy = response_logprobs(
            policy,
            ids,
            am,
            batch.prompt_len,
            s.temperature,
            with_entropy=True,
            packed=packed,
            entropy_grad=s.entropy_coef > 0,  # otherwise a metric: no graph over the vocabulary
        )
        assert entropy is not None
        assert t.old_logprobs is not None
        if capture:  # the weights have not moved since the rollout: these are the old log-probs
            t.old_logprobs[idx] = (logprobs.detach().float() * mask).cpu()
        proximal = t.old_logprobs[idx].to(device)
        w, weight_stats = self._token_weights(proximal, batch.logprobs[idx].to(device), mask)
        pg = policy_loss(
            logprobs=logprobs,
            old_logprobs=proximal,
            advantages=t.advantages[idx].to(device),
            response_mask=mask,
            clip_range=s.clip_range,
            clip_high=algo.clip_high,
            agg=algo.loss_agg,
            constant=s.loss_constant,
            behaviour_weights=w,
        )
        loss = pg.loss
        if s.entropy_coef > 0:
            loss = loss - s.entropy_coef * aggregate(entropy, mask, algo.loss_agg, s.loss_constant)
        stats = {
            "loss/policy": pg.loss.item(),
            **weight_stats,
            "policy/clip_fraction": pg.clip_fraction.item(),
            "policy/approx_kl": pg.approx_kl.item(),
            "policy/entropy": masked_mean(entropy, mask).item(),
        }
        if algo.kl_in == "loss" and batch.ref_logprobs is not None:
            # The KL to the reference as a loss term (GRPO): its gradient flows through logprobs.
            ref = batch.ref_logprobs[idx].to(device)
            kl = KL_ESTIMATORS[algo.kl_estimator](logprobs, ref)
            kl_loss = aggregate(kl, mask, algo.loss_agg, s.loss_constant)
            loss = loss + self.kl_coef * kl_loss
            stats["loss/kl"] = kl_loss.item()
        at = f"policy_version {self.policy_version}"
        self.rank.check_finite("loss/policy", loss, at)
        policy.backward(loss * weights["policy"])
        policy.step()
        value = self.rank.engines.get("value")
        if value is not None:
            assert t.old_values is not None
            values = response_values(value, ids, am, batch.prompt_len, packed)
            vl = value_loss(
                values=values,
                old_values=t.old_values[idx].to(device),
                returns=t.returns[idx].to(device),
                response_mask=mask,
                clip_range=s.value_clip_range,
            )
            vloss = s.value_coef * vl.loss
            self.rank.check_finite("loss/value", vloss, at)
            value.backward(vloss * weights["value"])
            value.step()
            stats["loss/value"] = vl.loss.item()
            stats["value/clip_fraction"] = vl.clip_fraction.item()
        return stats

    def _token_weights(
        self, proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """(B, T) importance weights of the policy loss (None: all ones) and their metrics.

        The engine–trainer correction where one is set (with stale samples it takes the place
        of the decoupled weight: both weigh the same ratio π_prox / π_behaviour); else, with
        stale samples, decoupled PPO's truncated weight.
        """
        s = self.s
        if s.rollout_correction != "none":
            cap = (
                min(s.correction_cap, s.behaviour_weight_cap)
                if s.max_staleness and (s.rollout_correction == "tis")
                else s.correction_cap
            )
            c = correction_weights(
                proximal, behaviour, mask, s.rollout_correction, cap, s.correction_low
            )
            return c.weights, correction_stats(c, proximal, behaviour, mask)
        if s.max_staleness:  # decoupled PPO: correct for the behaviour policy
            w = behaviour_weights(
                proximal_logprobs=proximal,
                behaviour_logprobs=behaviour,
                mask=mask,
                cap=s.behaviour_weight_cap,
            )
            return w, _weight_stats(w, mask, s.behaviour_weight_cap)
        return None, {}


def _weight_stats(w: torch.Tensor, mask: torch.Tensor, cap: float) -> dict[str, float]:
    """How far the behaviour policy was from the proximal one, in a micro-batch."""
    return {
        "off_policy/weight_mean": masked_mean(w, mask).item(),
        "off_policy/truncated_fraction": masked_mean((w >= cap).float(), mask).item(),
    }
