"""The only module that imports DeepSpeed: process group, engines, and full-weight gathering.

CPU runs use DeepSpeed's CPU accelerator with gloo; CUDA runs use nccl. Everything else is the same
code, so the CPU tests exercise the distributed path a GPU cluster runs.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rayrlhf.config import EngineConfig


def _deepspeed(device: str) -> Any:
    # The accelerator is chosen when deepspeed is first imported, so set it from config first.
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if device == "cpu" else "cuda")
    import deepspeed

    return deepspeed


def free_address(port: int = 0) -> tuple[str, int]:
    """This node's address and a free port (``port`` if given) for a process group's rank 0."""
    with socket.socket() as s:
        s.bind(("", port))
        free = s.getsockname()[1]
    try:
        host = socket.gethostbyname(socket.gethostname())
    except OSError:
        host = "127.0.0.1"
    return host, free


def _all_reduce(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    """``t`` reduced over the group, on the device its backend takes (nccl: the GPU)."""
    on = t.cuda() if dist.get_backend() == "nccl" else t
    dist.all_reduce(on, op=op or dist.ReduceOp.SUM)
    return on.cpu()


def all_sum(values: list[torch.Tensor | float], world_size: int) -> list[float]:
    """Sum each value over the learner ranks with one all-reduce (float64)."""
    t = torch.tensor([float(x) for x in values], dtype=torch.float64)
    if world_size > 1:
        t = _all_reduce(t)
    return t.tolist()


def all_max(values: list[int], world_size: int) -> list[int]:
    """Each value's maximum over the learner ranks (one all-reduce)."""
    t = torch.tensor(values, dtype=torch.long)
    if world_size > 1:
        t = _all_reduce(t, dist.ReduceOp.MAX)
    return [int(x) for x in t.tolist()]


def init_distributed(
    cfg: EngineConfig, master_addr: str, master_port: int, rank: int, timeout_s: float = 1800.0
) -> None:
    """Join the learners' torch.distributed group of ``cfg.num_ranks`` (``cfg.backend``).

    A collective that waits longer than ``timeout_s`` (a peer died) raises instead of hanging.
    """
    os.environ.update(
        MASTER_ADDR=master_addr,
        MASTER_PORT=str(master_port),
        RANK=str(rank),
        WORLD_SIZE=str(cfg.num_ranks),
        # Ray gives each learner actor its own GPU through CUDA_VISIBLE_DEVICES: always device 0.
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
    )
    if cfg.device == "cuda":
        torch.cuda.set_device(0)
    _deepspeed(cfg.device).init_distributed(
        dist_backend=cfg.backend,
        auto_mpi_discovery=False,
        rank=rank,
        world_size=cfg.num_ranks,
        init_method=f"tcp://{master_addr}:{master_port}",
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def deepspeed_config(cfg: EngineConfig, lr: float, warmup_steps: int = 0) -> dict[str, Any]:
    """DeepSpeed's JSON config for one engine from a learner section.

    ``warmup_steps`` > 0 ramps the learning rate linearly from 0 to ``lr`` over that many
    optimizer steps, then holds it.
    """
    per_rank = cfg.minibatch_size // cfg.num_ranks
    zero: dict[str, Any] = {"stage": cfg.effective_zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.device == "cuda"}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": cfg.device == "cuda"}
    ds: dict[str, Any] = {
        "train_batch_size": cfg.minibatch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": per_rank // cfg.micro_batch_size,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if warmup_steps > 0:
        ds["scheduler"] = {
            "type": "WarmupLR",
            "params": {
                # The first step already learns a little: lr/(n+1), 2·lr/(n+1), ... lr.
                "warmup_min_lr": lr / (warmup_steps + 1),
                "warmup_max_lr": lr,
                "warmup_num_steps": warmup_steps,
                "warmup_type": "linear",
            },
        }
    if cfg.offload_optimizer:
        # Offloaded states need DeepSpeed's own CPU Adam, so the optimizer is named here.
        ds["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": lr, "weight_decay": cfg.weight_decay, "betas": [0.9, 0.999]},
        }
    return ds


@contextmanager
def partitioned_loading(cfg: EngineConfig, lr: float) -> Iterator[None]:
    """Under ZeRO-3, models loaded with ``from_pretrained`` inside are built partitioned.

    Transformers wraps construction in ``deepspeed.zero.Init`` while an ``HfDeepSpeedConfig`` is
    alive, and loads each checkpoint tensor straight into its shards: no rank ever materialises
    the full model, which is what lets 20B-parameter models start on 80 GB GPUs.
    """
    if cfg.zero_stage != 3:
        yield
        return
    _deepspeed(cfg.device)
    from transformers.integrations import HfDeepSpeedConfig, unset_hf_deepspeed_config

    alive = HfDeepSpeedConfig(deepspeed_config(cfg, lr))  # transformers keeps only a weakref
    try:
        yield
    finally:
        del alive
        unset_hf_deepspeed_config()


def build_engine(model: nn.Module, lr: float, cfg: EngineConfig, warmup_steps: int = 0) -> Any:
    """Wrap ``model`` in a DeepSpeed engine with AdamW at ``lr`` (after ``warmup_steps``)."""
    ds = _deepspeed(cfg.device)
    params = [p for p in model.parameters() if p.requires_grad]
    conf = deepspeed_config(cfg, lr, warmup_steps)
    optimizer = None
    if not cfg.offload_optimizer:
        # fused: one kernel over all parameters instead of a loop of small ops per tensor.
        optimizer = torch.optim.AdamW(
            params, lr=lr, weight_decay=cfg.weight_decay, fused=cfg.fused_optimizer
        )
    engine, *_ = ds.initialize(
        model=model, model_parameters=params, optimizer=optimizer, config=conf
    )
    if cfg.effective_zero_stage == 0:
        _plain_data_parallel(engine, cfg.num_ranks)
    return engine


def _plain_data_parallel(engine: Any, num_ranks: int) -> None:
    """ZeRO-0 as the learner needs it: the clipped norm kept, and no gradient copies on 1 rank.

    DeepSpeed's stage-0 clipping computes the global norm and drops it, so the step's
    ``grad_norm`` metric had nothing to read; the clip is redone here keeping it. On one rank
    there is nothing to reduce, but DeepSpeed would still flatten every gradient into buckets,
    "all-reduce" them and copy them back.
    """
    from deepspeed.runtime.utils import clip_grad_norm_

    def clip_keeping_norm() -> None:
        engine._global_grad_norm = float(
            clip_grad_norm_(engine.module.parameters(), engine.gradient_clipping(), mpu=engine.mpu)
        )

    engine.clip_fp32_gradients = clip_keeping_norm
    if num_ranks == 1:
        engine.enable_backward_allreduce = False


def iter_full_params(
    engine: Any, zero_stage: int, only: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, full parameter)`` of ``engine.module`` one at a time, in module order.

    ``only``: the names to yield (and, under ZeRO-3, to gather): LoRA's adapters, not the
    frozen base they sit on. Under ZeRO-3 each parameter is gathered for the duration of its
    yield: a collective, so every rank must iterate to the end, and the consumer must copy what
    it keeps before advancing. One parameter at a time means no rank ever holds two full copies
    of the model.
    """
    import deepspeed  # imported by build_engine already; the accelerator is set

    for name, param in engine.module.named_parameters():
        if only is not None and not only(name):
            continue
        if zero_stage == 3:
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                yield name, param.data
        else:
            yield name, param.data


def full_shapes(engine: Any, only: Callable[[str], bool] | None = None) -> list[torch.Size]:
    """Full shapes of ``engine.module``'s parameters (those ``only`` keeps) in module order
    (ZeRO-3 keeps them aside)."""
    return [
        getattr(p, "ds_shape", p.shape)
        for n, p in engine.module.named_parameters()
        if only is None or only(n)
    ]


def gathered_state_dict(engine: Any, zero_stage: int, rank: int) -> dict[str, torch.Tensor]:
    """Every full parameter of ``engine.module`` by name, as CPU copies on rank 0 (empty on the
    other ranks, which only take part in the ZeRO-3 gathers: every rank must call it)."""
    state = {}
    for name, full in iter_full_params(engine, zero_stage):
        if rank == 0:
            state[name] = full.detach().cpu().clone()
    return state


def save_hf_model(engine: Any, zero_stage: int, rank: int, path: str | Path) -> bool:
    """Save ``engine.module`` (a transformers model) as a Hugging Face folder on rank 0.

    Every rank must call it: under ZeRO-3 each parameter is gathered collectively. Rank 0 keeps
    a CPU copy of each full parameter and writes them with the module's own config. Returns
    whether this rank wrote.
    """
    state = gathered_state_dict(engine, zero_stage, rank)
    if rank == 0:
        engine.module.save_pretrained(str(path), state_dict=state)
    return rank == 0


# ---- checkpoints ------------------------------------------------------------------------------

TAG = "state"  # one tag per folder: our manifest, not DeepSpeed's `latest`, says what is current


def save_engine(engine: Any, path: str | Path, trainable_only: bool = False) -> None:
    """DeepSpeed's own state of ``engine`` under ``path``: module weights, optimizer and
    LR-schedule state, ZeRO-partitioned as each rank holds them. A collective.

    ``trainable_only`` (LoRA): the frozen base is left out; it is the model folder the run
    starts from, loaded again on resume, so the checkpoint holds the adapters and their
    optimizer state only (megabytes, not the model).
    """
    engine.save_checkpoint(
        str(path), tag=TAG, save_latest=False, exclude_frozen_parameters=trainable_only
    )


def load_engine(engine: Any, path: str | Path, trainable_only: bool = False) -> None:
    """Restore what :func:`save_engine` wrote (same rank count, ZeRO stage and
    ``trainable_only``: a checkpoint without the frozen base loads over the base as loaded)."""
    loaded, _ = engine.load_checkpoint(
        str(path),
        tag=TAG,
        load_optimizer_states=True,
        load_lr_scheduler_states=True,
        load_module_strict=not trainable_only,
    )
    if loaded is None:
        raise FileNotFoundError(f"DeepSpeed found no engine state under {path}/{TAG}")


def _tensor_digest(tensors: Iterator[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def params_digest(engine: Any, zero_stage: int) -> str:
    """sha256 of the full parameters (collective under ZeRO-3): equal digests ⇔ torch.equal."""
    return _tensor_digest(full for _, full in iter_full_params(engine, zero_stage))


def optimizer_digest(engine: Any) -> str:
    """sha256 of this rank's optimizer state tensors (its ZeRO partition), in a fixed order."""
    base = getattr(engine.optimizer, "optimizer", engine.optimizer)  # ZeRO wraps torch's AdamW

    def tensors() -> Iterator[torch.Tensor]:
        for group in base.param_groups:
            for p in group["params"]:
                state = base.state.get(p, {})
                for key in sorted(state):
                    value = state[key]
                    yield value if torch.is_tensor(value) else torch.tensor(float(value))

    return _tensor_digest(tensors())


def grad_norm(engine: Any) -> float:
    """The global gradient norm of the engine's last optimizer step (before clipping)."""
    norm = engine.get_global_grad_norm()
    if norm is None:
        raise RuntimeError("DeepSpeed computed no gradient norm (gradient_clipping is on)")
    return float(norm)
