"""SupervisedLearner: one rank of the DeepSpeed group for SFT or reward-model training.

The same engine code as the PPO learner (process group, ZeRO, precision, offload). Every rank
reads the stage's table itself (files live on shared storage, like model folders), so the driver
never carries the data; all ranks see the same items in the same seeded order and each trains
its slice of every global minibatch. Losses are divided by the minibatch's global count
(tokens or rows), so the update does not depend on the rank count.
"""

from __future__ import annotations

import math

import torch

from rayrlhf.config import Config
from rayrlhf.data.tables import DataError
from rayrlhf.roles.rank_engine import RankEngine
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


class SupervisedLearner(RankEngine):
    """One rank. Build ``learner.num_ranks`` of them, :meth:`setup` all, then step them together."""

    def __init__(self, config: Config, stage: str, rank: int = 0) -> None:
        self.config, self.stage_name = config, stage
        self.stage = getattr(config, stage)
        if self.stage is None:
            raise ValueError(f"config has no {stage} section")
        super().__init__(self.stage.learner, rank, config.run.seed, config.timeouts.train_s)
        self._orders: dict[int, list[int]] = {}

    def setup(self, master_addr: str, master_port: int) -> dict[str, float]:
        """Join the group, load and encode the data, build the engine; returns the plan."""
        self.join_group(master_addr, master_port)
        self.task = make_task(self.config, self.stage_name)
        self.steps_per_epoch = len(self.task.train) // self.lc.minibatch_size
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{self.stage_name}: {len(self.task.train)} training items (sequences, when "
                f"packing), fewer than learner.minibatch_size={self.lc.minibatch_size}"
            )
        total = self.steps_per_epoch * self.stage.epochs
        self.total_steps = min(total, self.stage.max_steps or total)
        self.build_engines(
            lambda: {"engine": self.task.build_model()},
            {"engine": self.stage.lr},
            dropout=self.stage.dropout,
            warmup_steps=self.stage.warmup_steps,
        )
        self.engine = self.engines["engine"]
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
        mb, micro = self.lc.minibatch_size, self.lc.micro_batch_size
        per_rank = mb // self.world_size
        epoch, k = divmod(step, self.steps_per_epoch)
        minibatch = [self.task.train[i] for i in self._order(epoch)[k * mb : (k + 1) * mb]]
        # Every rank holds the same items, so the global denominator needs no communication.
        denominator = sum(self.task.weight(item) for item in minibatch)
        local = minibatch[self.rank * per_rank : (self.rank + 1) * per_rank]
        self.engine.train()
        sums: dict[str, float] = {}
        for start in range(0, per_rank, micro):
            loss, stats = self.task.loss_sums(self.engine, local[start : start + micro])
            self.check_finite(f"{self.stage_name} loss", loss, f"step {step}")
            # Each micro-batch's summed loss over the global minibatch's count.
            self.engine.backward(loss * self.loss_share(1.0, denominator))
            self.engine.step()
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
        # A task's own per-step update after the optimizer's (ILQL: its target Q heads).
        after_step = getattr(self.task, "after_step", None)
        if after_step is not None:
            after_step(self.engine.module, step)
        means = self._global_means(sums, f"step {step}")
        out = {"loss/train": means.pop("loss")}
        out.update({f"train/{k}": v for k, v in means.items()})
        out["lr"] = float(self.engine.get_lr()[0])
        return out

    def _global_means(self, sums: dict[str, float], at: str) -> dict[str, float]:
        means = self.task.means(self.all_sum_named(sums))
        for key, value in means.items():
            self.check_finite(f"{self.stage_name} metric {key}", value, at)
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
        return {f"eval/{k}": v for k, v in self._global_means(sums, "evaluation").items()}

    def save(self, path: str) -> bool:
        """Write the trained model (and tokenizer) as an HF folder; collective, rank 0 writes."""
        wrote = self.save_hf("engine", path)
        if wrote:
            self.task.save_extras(path)
        return wrote
