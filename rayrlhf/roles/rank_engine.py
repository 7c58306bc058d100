"""One learner rank's engine life, written once for the online and the supervised learner.

- **set-up**: the seed (identical head initialisation on every rank), the process group,
  partitioned loading under ZeRO-3, gradient checkpointing, dropout, the DeepSpeed engines;
- **checkpoints**: each engine's DeepSpeed state plus the rank's own counters and generators,
  saved and loaded; the digest the exact-resume tests compare;
- **the loss-rescaling rule** that makes 1 rank equal 2 ranks;
- **the non-finite guard**: a NaN loss or statistic stops the step instead of training on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rayrlhf.checkpoint import (
    check_owned,
    hash_files,
    load_rank_state,
    owned_files,
    save_rank_state,
)
from rayrlhf.config import EngineConfig
from rayrlhf.engine import (
    TAG,
    all_max,
    all_sum,
    build_engine,
    free_address,
    gathered_state_dict,
    init_distributed,
    load_engine,
    optimizer_digest,
    params_digest,
    partitioned_loading,
    save_engine,
    save_hf_model,
)
from rayrlhf.lora import has_adapters, save_lora_model
from rayrlhf.micro_batches import fixed_rows, micro_batch_count, split_rows
from rayrlhf.models import disable_dropout
from rayrlhf.reshard import load_resharded, saved_layout


class NonFiniteError(FloatingPointError):
    """A loss or statistic became NaN/inf: the step is stopped instead of training on it."""


class RankEngine:
    """The engines of one rank of a learner group of ``engine.num_ranks``.

    Subclasses load their models in :meth:`build_engines` and keep what else a checkpoint
    needs in :meth:`rank_state` / :meth:`load_rank_state`.
    """

    rendezvous_address = staticmethod(free_address)  # called on rank 0 by the group

    def __init__(self, engine: EngineConfig, rank: int, seed: int, timeout_s: float) -> None:
        self.lc, self.rank, self.seed, self.timeout_s = engine, rank, seed, timeout_s
        self.world_size = engine.num_ranks
        self.device = torch.device(engine.device)
        per_rank = engine.minibatch_size // self.world_size
        self.grad_accum = per_rank // engine.micro_batch_size  # micro-batches per optimizer step
        self.engines: dict[str, Any] = {}

    def join_group(self, master_addr: str, master_port: int) -> None:
        """Seed, then join the learners' process group."""
        torch.manual_seed(self.seed)  # identical head initialisation on every rank
        init_distributed(self.lc, master_addr, master_port, self.rank, self.timeout_s)

    def build_engines(
        self,
        load: Callable[[], dict[str, nn.Module]],
        lrs: dict[str, float],
        dropout: bool = False,
        warmup_steps: int = 0,
    ) -> None:
        """The models ``load()`` returns, by name, as engines with AdamW at ``lrs[name]``.

        Under ZeRO-3 the models are built partitioned (no rank holds a full copy). They train
        with dropout off unless ``dropout``, so learner and rollout log-probs agree.
        """
        with partitioned_loading(self.lc, next(iter(lrs.values()))):
            models = load()
        for name, model in models.items():
            if self.lc.gradient_checkpointing:
                model.gradient_checkpointing_enable()
            if not dropout:
                disable_dropout(model)
            # from_pretrained returns eval mode, in which transformers skips gradient
            # checkpointing.
            model.train()
            self.engines[name] = build_engine(model, lrs[name], self.lc, warmup_steps)

    # ---- numbers over all ranks ---------------------------------------------------------------

    def all_sum(self, *xs: torch.Tensor | float) -> list[float]:
        """Each value summed over the ranks (one all-reduce, float64)."""
        return all_sum(list(xs), self.world_size)

    def all_sum_named(self, sums: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """``sums`` summed over the ranks by name (one all-reduce, in sorted key order)."""
        keys = sorted(sums)
        return dict(zip(keys, self.all_sum(*(sums[k] for k in keys)), strict=True))

    def micro_batch_plan(
        self, minibatches: list[torch.Tensor], costs: torch.Tensor
    ) -> list[list[torch.Tensor]]:
        """Each minibatch's rows (indices into the step's batch) cut into micro-batches.

        ``learner.micro_batch_size`` rows each, or with ``max_tokens_per_micro_batch`` as few
        as keep each under the budget by ``costs`` (B,), balanced by tokens. Every rank runs the
        same number of micro-batches a minibatch (DeepSpeed reduces gradients at each
        backward): the largest any rank needs, agreed with one all-reduce.
        """
        budget = self.lc.max_tokens_per_micro_batch
        if budget == 0:
            return [fixed_rows(rows, self.lc.micro_batch_size) for rows in minibatches]
        local = [micro_batch_count(costs[rows], budget) for rows in minibatches]
        counts = all_max(local, self.world_size)
        return [split_rows(rows, costs, n) for rows, n in zip(minibatches, counts, strict=True)]

    def loss_share(self, units: float, global_units: float) -> float:
        """The factor a micro-batch's loss is scaled by: its ``units`` (tokens or rows) over the
        global minibatch's. DeepSpeed divides by the accumulation steps and averages over ranks;
        this undoes both, so the summed micro-batch losses are the global minibatch's mean and
        the update does not depend on the rank count or the split."""
        return units * self.grad_accum * self.world_size / global_units

    def check_finite(self, name: str, value: torch.Tensor | float, at: str) -> None:
        """Raise :class:`NonFiniteError` when ``value`` is NaN or infinite."""
        finite = (
            bool(torch.isfinite(value).all()) if torch.is_tensor(value) else math.isfinite(value)
        )
        if not finite:
            shown = value.item() if torch.is_tensor(value) else value
            raise NonFiniteError(
                f"{name} is {shown} on rank {self.rank} at {at}; not stepping the optimizer on it"
            )

    # ---- saving and checkpoints ---------------------------------------------------------------

    def save_hf(self, name: str, path: str) -> bool:
        """Save engine ``name``'s model as an HF folder (collective; rank 0 writes).

        With LoRA adapters: merged into a plain HF folder at ``path`` (what later stages and
        evaluation load), and peft's adapter folder beside it (:func:`rayrlhf.lora.adapter_folder`).
        """
        engine = self.engines[name]
        if not has_adapters(engine.module):
            return save_hf_model(engine, self.lc.zero_stage, self.rank, path)
        state = gathered_state_dict(engine, self.lc.zero_stage, self.rank)
        if self.rank == 0:
            save_lora_model(engine.module, path, state)
        return self.rank == 0

    def rank_state(self) -> dict[str, Any]:
        """What this rank keeps besides its engines (counters, controllers)."""
        return {}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`rank_state` returned."""

    def save_checkpoint(self, path: str) -> dict[str, dict[str, Any]]:
        """Write this rank's part of a checkpoint under ``path``; every rank calls (collective).

        DeepSpeed's state of each engine (weights, optimizer, ZeRO partitions), then this
        rank's own state and random generators. Returns the manifest entries (sha256, bytes)
        of the files this rank wrote, paths relative to ``path``: the rank that wrote a file
        hashes it, so its bytes are read where they were written.
        """
        for name, engine in self.engines.items():
            # LoRA: the adapters (and a value head) and their optimizer state, not the base.
            save_engine(engine, f"{path}/{name}", trainable_only=has_adapters(engine.module))
        save_rank_state(path, self.rank, self.rank_state())
        if self.world_size > 1:
            torch.distributed.barrier()  # every rank's files are complete before rank 0 lists
        return hash_files(Path(path), owned_files(path, self.rank), f"rank {self.rank}")

    def load_checkpoint(self, path: str, entries: dict[str, dict[str, Any]] | None = None) -> int:
        """Restore this rank's part of the checkpoint at ``path``, after checking the files it
        wrote against their manifest ``entries`` (relative to ``path``); returns the rank."""
        if entries is not None:
            check_owned(path, self.rank, entries, self.world_size)
        stage = self.lc.effective_zero_stage
        for name, engine in self.engines.items():
            folder = f"{path}/{name}"
            if saved_layout(f"{folder}/{TAG}") == (self.world_size, stage):
                load_engine(engine, folder, trainable_only=has_adapters(engine.module))
            else:  # written by another rank count: the full state, resharded (rayrlhf.reshard)
                load_resharded(engine, f"{folder}/{TAG}", stage)
        self.load_rank_state(load_rank_state(path, self.rank))
        return self.rank

    def state_digest(self) -> dict[str, str]:
        """sha256 of the full parameters and of this rank's optimizer state, per engine.

        Equal digests mean ``torch.equal`` tensors: what the exact-resume tests compare.
        """
        digests = {}
        for name, engine in self.engines.items():
            digests[f"{name}/params"] = params_digest(engine, self.lc.zero_stage)
            digests[f"{name}/optimizer"] = optimizer_digest(engine)
        return digests
