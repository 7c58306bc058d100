"""SupervisedLearner: one rank of the DeepSpeed group for SFT or reward-model training.

The same engine code as the PPO learner (process group, ZeRO, precision, offload). Every rank
reads the stage's table itself (files live on shared storage, like model folders), so the driver
never carries the data; all ranks see the same items in the same seeded order and each trains
its slice of every global minibatch. Losses are divided by the minibatch's global count
(tokens or rows), so the update does not depend on the rank count.
"""

from __future__ import annotations

import math
import time

import torch

from rayrlhf.checkpoint import load_rank_state, save_rank_state
from rayrlhf.config import Config
from rayrlhf.data.tables import DataError
from rayrlhf.engine import (
    all_sum,
    build_engine,
    free_address,
    init_distributed,
    load_engine,
    optimizer_digest,
    params_digest,
    partitioned_loading,
    save_engine,
    save_hf_model,
)
from rayrlhf.models import disable_dropout
from rayrlhf.roles.policy_update import NonFiniteError
from rayrlhf.tasks.base import Task


def make_task(config: Config, stage: str) -> Task:
    """The task for a stage name (``sft``, ``reward_model``, ``dpo`` or ``ilql``)."""
    if stage == "sft":
        from rayrlhf.tasks.sft import SFTTask

        return SFTTask(config)
    if stage == "reward_model":
        from rayrlhf.tasks.reward_model import RewardModelTask

        return RewardModelTask(config)
    if stage == "dpo":
        from rayrlhf.tasks.dpo import DPOTask

        return DPOTask(config)
    if stage == "ilql":
        from rayrlhf.tasks.ilql import ILQLTask

        return ILQLTask(config)
    raise ValueError(f"unknown supervised stage {stage!r}")


class SupervisedLearner:
    """One rank. Build ``learner.num_ranks`` of them, :meth:`setup` all, then step them together."""

    rendezvous_address = staticmethod(free_address)  # called on rank 0 by the group

    def __init__(self, config: Config, stage: str, rank: int = 0) -> None:
        self.config, self.stage_name, self.rank = config, stage, rank
        self.stage = getattr(config, stage)
        if self.stage is None:
            raise ValueError(f"config has no {stage} section")
        self.lc = self.stage.learner
        self.world_size = self.lc.num_ranks
        self._orders: dict[int, list[int]] = {}

    def setup(self, master_addr: str, master_port: int) -> dict[str, float]:
        """Join the group, load and encode the data, build the engine; returns the plan."""
        torch.manual_seed(self.config.run.seed)  # identical head init on every rank
        init_distributed(self.lc, master_addr, master_port, self.rank, self.config.timeouts.train_s)
        self.task = make_task(self.config, self.stage_name)
        self.steps_per_epoch = len(self.task.train) // self.lc.minibatch_size
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{self.stage_name}: {len(self.task.train)} training items (sequences, when "
                f"packing), fewer than learner.minibatch_size={self.lc.minibatch_size}"
            )
        total = self.steps_per_epoch * self.stage.epochs
        self.total_steps = min(total, self.stage.max_steps or total)
        with partitioned_loading(self.lc, self.stage.lr):
            model = self.task.build_model()
        if self.lc.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if not self.stage.dropout:
            disable_dropout(model)
        self.engine = build_engine(model, self.stage.lr, self.lc, self.stage.warmup_steps)
        return {
            "steps": float(self.total_steps),
            "train_items": float(len(self.task.train)),
            "heldout_items": float(len(self.task.heldout)),
            **self.task.report.metrics(),
        }

    # ---- training -----------------------------------------------------------------------------

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            gen = torch.Generator().manual_seed(self.config.run.seed * 1000003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.task.train), generator=gen).tolist()}
        return self._orders[epoch]

    def train_step(self, step: int) -> dict[str, float]:
        """Optimizer step ``step``: this rank's slice of the global minibatch; global metrics."""
        start_time = time.perf_counter()
        mb, micro = self.lc.minibatch_size, self.lc.micro_batch_size
        per_rank = mb // self.world_size
        grad_accum = per_rank // micro
        epoch, k = divmod(step, self.steps_per_epoch)
        minibatch = [self.task.train[i] for i in self._order(epoch)[k * mb : (k + 1) * mb]]
        # Every rank holds the same items, so the global denominator needs no communication.
        denominator = sum(self.task.weight(item) for item in minibatch)
        local = minibatch[self.rank * per_rank : (self.rank + 1) * per_rank]
        self.engine.train()
        sums: dict[str, float] = {}
        for start in range(0, per_rank, micro):
            loss, stats = self.task.loss_sums(self.engine, local[start : start + micro])
            if not torch.isfinite(loss):
                raise NonFiniteError(
                    f"{self.stage_name} loss is {loss.item()} on rank {self.rank} at step {step}; "
                    "not stepping the optimizer on it"
                )
            # DeepSpeed divides by grad_accum and averages over ranks: undo both, so the summed
            # micro-batch losses make the mean over the global minibatch.
            self.engine.backward(loss * (grad_accum * self.world_size / denominator))
            self.engine.step()
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
        # A task's own per-step update after the optimizer's (ILQL: its target Q heads).
        after_step = getattr(self.task, "after_step", None)
        if after_step is not None:
            after_step(self.engine.module, step)
        means = self._global_means(sums)
        out = {"loss/train": means.pop("loss")}
        out.update({f"train/{k}": v for k, v in means.items()})
        out["lr"] = float(self.engine.get_lr()[0])
        out["time/step"] = time.perf_counter() - start_time
        return out

    def _global_means(self, sums: dict[str, float]) -> dict[str, float]:
        keys = sorted(sums)
        totals = dict(zip(keys, all_sum([sums[k] for k in keys], self.world_size), strict=True))
        means = self.task.means(totals)
        for key, value in means.items():
            if not math.isfinite(value):
                raise NonFiniteError(f"{self.stage_name} metric {key} is {value}")
        return means

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Metrics over the held-out items, each rank on a contiguous slice; global means."""
        held = self.task.heldout
        if not held:
            return {}
        self.engine.eval()
        micro = self.lc.micro_batch_size
        per_rank = math.ceil(len(held) / self.world_size)
        items = held[self.rank * per_rank : (self.rank + 1) * per_rank]
        sums: dict[str, float] = {}
        # Every rank runs the same number of forwards: under ZeRO-3 each forward gathers
        # parameters collectively, so a rank with fewer items runs a discarded one instead.
        for start in range(0, per_rank, micro):
            chunk = items[start : start + micro]
            _, stats = self.task.loss_sums(self.engine, chunk or held[:1])
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + (value if chunk else 0.0)
        return {f"eval/{k}": v for k, v in self._global_means(sums).items()}

    def save(self, path: str) -> bool:
        """Write the trained model (and tokenizer) as an HF folder; collective, rank 0 writes."""
        wrote = save_hf_model(self.engine, self.lc.zero_stage, self.rank, path)
        if wrote:
            self.task.save_extras(path)
        return wrote

    # ---- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, path: str) -> int:
        """Write this rank's part of a checkpoint (DeepSpeed state, RNG); collective."""
        save_engine(self.engine, f"{path}/engine")
        save_rank_state(path, self.rank, {})
        return self.rank

    def load_checkpoint(self, path: str) -> int:
        """Restore this rank's part of the checkpoint at ``path``; returns the rank."""
        load_engine(self.engine, f"{path}/engine")
        load_rank_state(path, self.rank)
        return self.rank

    def state_digest(self) -> dict[str, str]:
        """sha256 of the full parameters and of this rank's optimizer state."""
        return {
            "params": params_digest(self.engine, self.lc.zero_stage),
            "optimizer": optimizer_digest(self.engine),
        }
