"""Text and JSON for what trains and where the reference runs: LoRA's adapters, weight sync's
bytes, a reference computed by the learner. See :mod:`rayrlhf.planner.lora`; printed in GiB."""

from __future__ import annotations

from typing import Any

from rayrlhf.planner import memory as m
from rayrlhf.planner.lora import Tuning, sync_bytes
from rayrlhf.planner.placement import Placement
from rayrlhf.planner.shapes import ModelShape

# The learner table's columns, in bytes' keys and headings; LoRA adds the frozen base first.
COLS = ("weights16", "grads16", "optim", "grad32", "live", "buffers")
HEAD = ("w16", "g16", "optim", "g32", "live", "buf")


def columns(tune: Tuning) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The learner table's (keys, headings): with LoRA ``frz`` (frozen bf16 base) comes first
    and w16 … g32 are the adapters' (and the value head's) states."""
    if tune.lora is None:
        return COLS, HEAD
    return ("frozen16", *COLS), ("frz", *HEAD)


def _count(n: int) -> str:
    """A parameter count in words: ``69.2M``, ``6.1K``, ``20.55B``."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}B" if unit == "B" else f"{n / div:.1f}{unit}"
    return str(n)


def models_text(shape: ModelShape, tune: Tuning) -> str:
    """The learner table's heading: what the rank holds and trains."""
    lp = tune.lora
    value = f"value {shape.value_params / 1e9:.2f}B params" if shape.value_params else ""
    if lp is None:
        value = value or "no value model (critic-free)"
        return f"policy {shape.params / 1e9:.2f}B + {value}"
    pol = f"policy {shape.params / 1e9:.2f}B frozen + {_count(lp.policy.trainable)} adapters"
    if lp.value is None:
        return f"{pol}, no value model (critic-free)"
    head = shape.hidden + 1
    return (
        f"{pol}, value {lp.value.frozen / 1e9:.2f}B frozen + "
        f"{_count(lp.value.trainable - head)} adapters + {_count(head)} head"
    )


def tuning_lines(shape: ModelShape, tune: Tuning) -> list[str]:
    """LoRA's adapters and frozen base, weight sync's bytes, where the reference runs."""
    out = []
    lp = tune.lora
    if lp is not None:
        targets = lp.targets if isinstance(lp.targets, str) else ", ".join(lp.targets)
        share = lp.policy.trainable / shape.params
        out.append(
            f"LoRA r={lp.rank} on {targets} ({lp.layers_adapted} layers): "
            f"{_count(lp.policy.trainable)} policy adapter params ({share:.2%}); base weights "
            "frozen in bf16, no gradients or Adam states (frz): ZeRO-3 partitions them over the "
            "ranks, ZeRO-0/1/2 keep them whole on every rank; w16…g32 are the adapters' states."
        )
    sync = sync_bytes(shape, tune)
    if lp is None:
        out.append(f"Weight sync: {sync['full'] / m.GIB:.1f} GiB per sync (the policy, bf16).")
    else:
        out.append(
            f"Weight sync: {sync['sent'] / m.GIB:.2f} GiB per sync (adapters only, bf16) instead "
            f"of the full weights' {sync['full'] / m.GIB:.1f} GiB."
        )
    if tune.reference == "learner":
        out.append(
            "Reference: the learner's policy with its adapters disabled: no reference workers or "
            "GPUs; one more forward pass a step (no gradients, micro-batch rows: its transient "
            "stays below the training step's activations)."
        )
    elif tune.reference == "none":
        out.append("Reference: none (no KL penalty: online.kl_coef 0).")
    return out


def roles_text(plc: Placement, tune: Tuning) -> str:
    """The verdict's roles: ``rollout on 2 GPU(s), reference on 1, reward on 1``."""
    if tune.reference_gpus:
        ref = f"reference on {plc.reference}"
    else:
        ref = "reference in the learner" if tune.reference == "learner" else "no reference"
    shared = " (sharing one GPU, 0.5 each)" if plc.shared else ""
    reward = f"reward on {plc.reward}" if plc.reward else "no reward GPU (function or URL)"
    return f"rollout on {plc.rollout} GPU(s), {ref}, {reward}{shared}"


def training_text(tune: Tuning) -> str:
    """``PPO`` or ``PPO with LoRA r=16`` for the verdict."""
    return "PPO" if tune.lora is None else f"PPO with LoRA r={tune.lora.rank}"


def as_json(shape: ModelShape, tune: Tuning) -> dict[str, Any]:
    """What trains, where the reference runs and weight sync's bytes, as plain data (GiB)."""
    sync = sync_bytes(shape, tune)
    return {
        "lora": tune.lora.as_dict() if tune.lora is not None else None,
        "reference": tune.reference,
        "sync_gib": sync["sent"] / m.GIB,
        "full_weights_gib": sync["full"] / m.GIB,
    }
