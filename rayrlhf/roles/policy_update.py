"""The policy-gradient update of one learner rank: epochs over minibatches of a step's batch.

One class for every online algorithm: the clipped surrogate with the algorithm's loss
aggregation and clip range, the KL as a loss term where the algorithm puts it there, the entropy
bonus, and the value loss when the algorithm has a critic. Every loss is divided by the global
minibatch's count of its units (tokens, or rows), summed over ranks and micro-batches, so the
update does not depend on how a minibatch is split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from rayrlhf.algos.aggregation import LOSS_AGGREGATIONS, aggregate
from rayrlhf.algos.kl import KL_ESTIMATORS
from rayrlhf.algos.losses import policy_loss, value_loss
from rayrlhf.algos.masking import masked_mean
from rayrlhf.algos.off_policy import behaviour_weights
from rayrlhf.config import Config
from rayrlhf.engine import grad_norm
from rayrlhf.experience import RolloutBatch
from rayrlhf.models import response_logprobs, response_values


class NonFiniteError(FloatingPointError):
    """A loss or statistic became NaN/inf: the step is stopped instead of training on it."""


class PolicyUpdate:
    """Trains ``policy`` (and ``value``, None without a critic) on one step's batch."""

    def __init__(
        self,
        config: Config,
        policy: object,
        value: object | None,
        rank: int,
        world_size: int,
        all_sum: Callable[..., list[float]],
    ) -> None:
        self.config, self.algo = config, config.algo
        self.policy, self.value = policy, value
        self.rank, self.world_size, self._all_sum = rank, world_size, all_sum
        self.device = torch.device(config.learner.device)
        self.policy_version = 0  # set before each run: the minibatch order's seed, messages
        self.kl_coef = 0.0

    def _engines(self) -> list[tuple[str, object]]:
        return [("policy", self.policy)] + ([("value", self.value)] if self.value else [])

    def run(
        self,
        batch: RolloutBatch,
        old_logprobs: torch.Tensor | None,
        old_values: torch.Tensor | None,
        adv: torch.Tensor,
        returns: torch.Tensor,
        policy_version: int,
        kl_coef: float,
    ) -> tuple[dict[str, float], torch.Tensor]:
        """Run ``learner.ppo_epochs`` epochs; this rank's mean of each loss metric, and the
        (B, R) old log-probs.

        ``old_logprobs=None`` takes them from the first epoch's own forward passes (TRL does
        the same with one iteration): valid only when one minibatch covers the step, so that
        no optimizer step happens before every row's first forward; the learner checks that.
        """
        self.policy_version, self.kl_coef = policy_version, kl_coef
        capture = old_logprobs is None
        if capture:
            old_logprobs = torch.zeros_like(batch.logprobs)
        means = self._epochs(batch, old_logprobs, old_values, adv, returns, capture)
        return means, old_logprobs

    def _epochs(
        self, batch, old_logprobs, old_values, adv, returns, capture: bool = False
    ) -> dict[str, float]:
        """Clipped policy gradient (and value) epochs over minibatches; this rank's mean of each
        loss metric.

        The engines are stepped after every micro-batch; DeepSpeed applies the update at each
        gradient-accumulation boundary, i.e. once per ``learner.minibatch_size`` samples.
        Losses are divided by the global minibatch's count of the aggregation's units (tokens for
        a token mean, rows for a per-sequence mean or a constant normaliser) summed over all
        ranks and micro-batches, so the update does not depend on how the minibatch is split.
        """
        lc, algo = self.config.learner, self.algo
        per_rank = lc.minibatch_size // self.world_size
        grad_accum = per_rank // lc.micro_batch_size
        gen = torch.Generator().manual_seed(self.config.run.seed * 100003 + self.policy_version)
        orders = [torch.randperm(len(batch), generator=gen) for _ in range(lc.ppo_epochs)]
        units = {
            "policy": LOSS_AGGREGATIONS[algo.loss_agg].units(batch.response_mask, self._constant),
            "value": batch.response_mask.sum(-1).double(),  # the value loss is a token mean
        }
        engines = self._engines()
        local = [
            units[name][o[i : i + per_rank]].sum()
            for name, _ in engines
            for o in orders
            for i in range(0, len(o), per_rank)
        ]
        per_engine = len(local) // len(engines)
        reduced = self._all_sum(*local)  # one all-reduce for every minibatch of the step
        global_units = {
            name: reduced[k * per_engine : (k + 1) * per_engine]
            for k, (name, _) in enumerate(engines)
        }
        sums: dict[str, float] = defaultdict(float)
        norms: dict[str, float] = defaultdict(float)
        count = 0
        for epoch, order in enumerate(orders):
            for start in range(0, len(batch), lc.micro_batch_size):
                idx = order[start : start + lc.micro_batch_size]
                k = epoch * (len(batch) // per_rank) + start // per_rank
                # DeepSpeed divides by grad_accum and averages over ranks; undo both so the sum of
                # micro-batch losses is the loss of the global minibatch.
                weights = {
                    name: float(units[name][idx].sum())
                    * grad_accum
                    * self.world_size
                    / global_units[name][k]
                    for name, _ in engines
                }
                stats = self._micro_step(
                    batch,
                    idx,
                    old_logprobs,
                    old_values,
                    adv,
                    returns,
                    weights,
                    capture and epoch == 0,
                )
                for key, v in stats.items():
                    sums[key] += v
                count += 1
                if count % grad_accum == 0:  # an optimizer step: its global gradient norms
                    for name, engine in engines:
                        norms[f"{name}/grad_norm"] += grad_norm(engine)
        means = {key: v / max(count, 1) for key, v in sums.items()}
        # Global already (DeepSpeed reduces them), so equal on every rank: a loss scale that
        # depends on the rank count shows here even where Adam hides it in the parameters.
        means.update({key: v / max(count // grad_accum, 1) for key, v in norms.items()})
        return means

    @property
    def _constant(self) -> float:
        """Dr. GRPO's normaliser: ``algorithm.loss_constant`` or the generation budget."""
        return float(self.config.algorithm.loss_constant or self.config.rollout.max_new_tokens)

    def _micro_step(
        self,
        batch,
        idx,
        old_logprobs,
        old_values,
        adv,
        returns,
        weights: dict[str, float],
        capture: bool = False,
    ) -> dict[str, float]:
        """Forward, backward and (at accumulation boundaries) step of each engine.

        ``weights[engine]`` rescales this micro-batch's losses to its share of the minibatch;
        ``capture``: these rows' old log-probs are this forward's, written into ``old_logprobs``.
        """
        ppo, algo, temp = self.config.ppo, self.algo, self.config.rollout.temperature
        algo_cfg = self.config.algorithm
        ids = batch.input_ids[idx].to(self.device)
        am = batch.attention_mask[idx].to(self.device)
        mask = batch.response_mask[idx].to(self.device)
        logprobs, entropy = response_logprobs(
            self.policy, ids, am, batch.prompt_len, temp, with_entropy=True
        )
        c = self._constant
        if capture:  # the weights have not moved since the rollout: these are the old log-probs
            old_logprobs[idx] = (logprobs.detach().float() * mask).cpu()
        proximal = old_logprobs[idx].to(self.device)
        w = None
        if self.config.rollout.max_staleness:  # decoupled PPO: correct for the behaviour policy
            behaviour = batch.logprobs[idx].to(self.device)
            w = behaviour_weights(proximal, behaviour, mask, algo_cfg.behaviour_weight_cap)
        pg = policy_loss(
            logprobs,
            proximal,
            adv[idx].to(self.device),
            mask,
            ppo.clip_range,
            algo.clip_high,
            algo.loss_agg,
            c,
            w,
        )
        loss = pg.loss - ppo.entropy_coef * aggregate(entropy, mask, algo.loss_agg, c)
        stats = {
            "loss/policy": pg.loss.item(),
            **(_weight_stats(w, mask, algo_cfg.behaviour_weight_cap) if w is not None else {}),
            "policy/clip_fraction": pg.clip_fraction.item(),
            "policy/approx_kl": pg.approx_kl.item(),
            "policy/entropy": masked_mean(entropy, mask).item(),
        }
        if algo.kl_in == "loss" and batch.ref_logprobs is not None:
            # The KL to the reference as a loss term (GRPO): its gradient flows through logprobs.
            ref = batch.ref_logprobs[idx].to(self.device)
            kl = KL_ESTIMATORS[algo.kl_estimator](logprobs, ref)
            kl_loss = aggregate(kl, mask, algo.loss_agg, c)
            loss = loss + self.kl_coef * kl_loss
            stats["loss/kl"] = kl_loss.item()
        self._check_finite("loss/policy", loss)
        self.policy.backward(loss * weights["policy"])
        self.policy.step()
        if self.value is not None:
            values = response_values(self.value, ids, am, batch.prompt_len)
            vl = value_loss(
                values,
                old_values[idx].to(self.device),
                returns[idx].to(self.device),
                mask,
                ppo.value_clip_range,
            )
            vloss = ppo.value_coef * vl.loss
            self._check_finite("loss/value", vloss)
            self.value.backward(vloss * weights["value"])
            self.value.step()
            stats["loss/value"] = vl.loss.item()
            stats["value/clip_fraction"] = vl.clip_fraction.item()
        return stats

    def _check_finite(self, name: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            raise NonFiniteError(
                f"{name} is {loss.item()} on rank {self.rank} at policy_version "
                f"{self.policy_version}; not stepping the optimizer on it"
            )


def _weight_stats(w: torch.Tensor, mask: torch.Tensor, cap: float) -> dict[str, float]:
    """How far the behaviour policy was from the proximal one, in a micro-batch."""
    return {
        "off_policy/weight_mean": masked_mean(w, mask).item(),
        "off_policy/truncated_fraction": masked_mean((w >= cap).float(), mask).item(),
    }
