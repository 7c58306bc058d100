"""Resume on another learner rank count: a checkpoint written by N ranks, loaded by M.

DeepSpeed's own loader needs the rank count (and ZeRO stage) that wrote the files: each rank
reads its own partition. Here every rank of the new group instead reads the *full* state from
all N ranks' files, rank-count-free, and writes its own partition of it:

- **read**: the fp32 master weights and Adam's two moments of every trainable parameter, by
  name, assembled from the N partitions (DeepSpeed's ``zero_to_fp32`` reassembly, applied to
  the moments as to the weights; a one-rank stage-0 checkpoint holds torch's optimizer state,
  by parameter index), plus Adam's step and the engine's step counters;
- **write**: stage 0 sets each parameter and its optimizer state; ZeRO-1/2 set each rank's
  fragment through DeepSpeed's ``safe_set_full_*`` and then refresh the module's weights from
  the new masters, as DeepSpeed's universal-checkpoint loader does. Reading a ZeRO-3 checkpoint
  works; writing into ZeRO-3 engines does not yet (resume.check_compatible refuses a ZeRO-3
  rank-count change before any actor starts).

What "exact" means here: the M ranks hold, bit for bit, the weights and moments the N ranks
saved; a run resumed that way then equals an M-rank run resumed from the same state written by
M ranks (tests/integration/test_reshard.py). (Equal to the N-rank run itself only to float
rounding: M ranks sum gradients in another order, as 1 and 2 ranks always do.)

Every rank reads every file: the host memory of one full fp32 copy of weights and moments per
rank, during the load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")
COUNTERS = ("global_steps", "global_samples", "skipped_steps")


@dataclass
class FullState:
    """One engine's rank-count-free training state, tensors by parameter name."""

    params: dict[str, torch.Tensor]
    moments: dict[str, dict[str, torch.Tensor]]  # "exp_avg" → name → tensor
    step: torch.Tensor  # Adam's step count (one for all parameters)
    counters: dict[str, int]
    lr_scheduler: dict[str, Any] | None


def _by_rank(paths: list[Path]) -> list[Path]:
    """DeepSpeed's per-rank files in rank order (``zero_pp_rank_10`` after ``_9``)."""
    return sorted(
        paths, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]
    )


def saved_layout(state_dir: str | Path) -> tuple[int, int]:
    """(ranks, effective ZeRO stage) that wrote a DeepSpeed engine folder."""
    optim = list(Path(state_dir).glob("*_optim_states.pt"))
    if not optim:
        return 1, 0  # stage 0: one model-states file holds torch's optimizer state
    first = torch.load(optim[0], map_location="cpu", weights_only=False)["optimizer_state_dict"]
    return len(optim), int(first["zero_stage"])


def read_full_state(state_dir: str | Path, trainable: list[str]) -> FullState:
    """The full state of the engine saved in ``state_dir`` (its ``state`` tag folder);
    ``trainable``: the engine's trainable parameter names in optimizer order."""
    state_dir = Path(state_dir)
    model_files = _by_rank(list(state_dir.glob("*model_states.pt")))
    first = torch.load(model_files[0], map_location="cpu", weights_only=False)
    counters = {k: int(first.get(k) or 0) for k in COUNTERS}
    optim = _by_rank(list(state_dir.glob("*_optim_states.pt")))
    if not optim:  # stage 0: torch's optimizer state, parameters by index in optimizer order
        opt = first["optimizer"]
        index = [i for group in opt["param_groups"] for i in group["params"]]
        params = {n: first["module"][n].float() for n in trainable}
        moments = {k: {n: opt["state"][i][k] for n, i in zip(trainable, index, strict=True)}
                   for k in MOMENTS}  # fmt: skip
        step = opt["state"][index[0]]["step"]
        return FullState(params, moments, step, counters, first.get("lr_scheduler"))

    from deepspeed.utils import zero_to_fp32 as z

    models = z.parse_model_states(model_files)
    saved = [torch.load(f, map_location="cpu", weights_only=False)["optimizer_state_dict"]
             for f in optim]  # fmt: skip
    stage, ranks = int(saved[0]["zero_stage"]), len(saved)
    flat_key = "single_partition_of_fp32_groups" if stage <= 2 else "fp32_flat_groups"
    # torch AdamW's state over the flat groups (ZeRO-1/2 and ZeRO-3 name it differently)
    bases = [s.get("base_optimizer_state") or s["optimizer_state_dict"] for s in saved]

    def merged(flats: list[list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        if stage <= 2:
            paddings = saved[0].get("param_alignment_paddings")
            full = z._get_fp32_state_dict_from_zero2_checkpoint(
                ranks, flats, models, True, paddings
            )
        else:
            full = z._get_fp32_state_dict_from_zero3_checkpoint(ranks, flats, models, True)
        full = z.to_torch_tensor(full)
        return {n: full[n].clone() for n in trainable}

    params = merged([s[flat_key] for s in saved])
    groups = sorted(bases[0]["state"])
    moments = {k: merged([[b["state"][g][k] for g in groups] for b in bases]) for k in MOMENTS}
    step = bases[0]["state"][groups[0]]["step"]
    return FullState(params, moments, step, counters, first.get("lr_scheduler"))


def zero_param_names(state_dir: str | Path) -> list[str]:
    """The trainable parameter names a ZeRO engine folder records, in optimizer order."""
    first = _by_rank(list(Path(state_dir).glob("*model_states.pt")))[0]
    shapes = torch.load(first, map_location="cpu", weights_only=False)["param_shapes"]
    return [name for group in shapes for name in group]


def trainable_names(engine: Any) -> list[str]:
    """The engine's trainable parameters' names, in the order its optimizer holds them."""
    return [n for n, p in engine.module.named_parameters() if p.requires_grad]


def write_full_state(engine: Any, state: FullState, stage: int) -> None:
    """Set this rank's part of ``state`` into ``engine`` (effective ZeRO ``stage``)."""
    named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
    if stage == 0:
        opt = engine.optimizer
        for name, p in named:
            p.data.copy_(state.params[name])
            opt.state[p] = {
                "step": state.step.clone().to(p.device),
                **{k: state.moments[k][name].clone().to(p.device) for k in MOMENTS},
            }
    else:
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

        if stage == 3:
            raise NotImplementedError("resharding into ZeRO-3 engines (refused at resume)")
        _materialise_adam_state(engine.optimizer, state.step)
        for name, p in named:
            safe_set_full_fp32_param(p, state.params[name].to(p.device))
            for k in MOMENTS:
                safe_set_full_optimizer_state(p, state.moments[k][name].to(p.device), k)
        base = engine.optimizer.optimizer
        for slot in base.state.values():
            slot["step"] = state.step.clone().to(slot["step"].device)
        engine.optimizer.update_lp_params()  # module weights from the new masters
    for key, value in state.counters.items():
        setattr(engine, key, value)
    if state.lr_scheduler is not None and engine.lr_scheduler is not None:
        engine.lr_scheduler.load_state_dict(state.lr_scheduler)


def _materialise_adam_state(optimizer: Any, step: torch.Tensor) -> None:
    """Adam's state over this rank's flat fp32 partitions (ZeRO-1/2), created as torch would at
    the first step (a fresh engine has none: AdamW makes it lazily), so it can be set; and each
    parameter's fragment views into it."""
    base = optimizer.optimizer
    for flat, params in zip(
        optimizer.single_partition_of_fp32_groups, optimizer.bit16_groups, strict=True
    ):
        if not base.state[flat]:
            base.state[flat] = {
                "step": step.clone().to(flat.device),
                **{k: torch.zeros_like(flat) for k in MOMENTS},
            }
        for p in params:
            if p._hp_mapping is not None:
                p._hp_mapping.set_optim_state_fragment(flat, base.state[flat])


def load_resharded(engine: Any, state_dir: str | Path, stage: int) -> None:
    """Load an engine folder written by another rank count into ``engine``."""
    write_full_state(engine, read_full_state(state_dir, trainable_names(engine)), stage)
