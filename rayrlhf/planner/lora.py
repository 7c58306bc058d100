"""LoRA in the plan: adapter counts, the learner's model states, activations and weight sync.

peft's LoRA gives an adapted linear layer (d_in → d_out) two matrices, A (r × d_in) and B
(d_out × r): r·(d_in + d_out) parameters, no bias. ``all-linear`` adapts every linear layer but
the output head (:func:`rayrlhf.planner.shapes.linear_layers`); a list adapts the layers whose
name is one of its entries or ends in ``.`` + one (peft's suffix rule). The value model adapts its
backbone the same way and trains its scalar head whole (h + 1 parameters).

Memory of one LoRA-wrapped model on a learner rank (Ψ base parameters, A trainable, N ranks):

- Base weights are frozen in bf16 (DeepSpeed casts the whole module to the training precision):
  no gradients, no fp32 master copy, no Adam moments.
- Assumption on their partitioning, from DeepSpeed's code: ZeRO-3 partitions every parameter of
  the module, trainable or not (``_convert_to_zero_parameters`` walks ``module.parameters()`` and
  ``zero.Init`` builds them partitioned), so a rank holds 2Ψ/N and, while a layer runs, its
  gathered bf16 weights (no gradient of its own: 2 bytes × the largest layer, not 4).
  ZeRO-1/2 partition only optimizer states and gradients, which frozen weights do not have, so
  under ZeRO-0/1/2 every rank holds all 2Ψ. Parameter offload (ZeRO-3) moves the frozen
  partition to CPU with the rest.
- Adapters (and the value head) train as any parameter: bf16 weights and gradients, fp32 master
  + Adam m + v, fp32 gradients, partitioned by ZeRO as in full fine-tuning
  (:func:`rayrlhf.planner.memory.model_state_bytes`).
- Activations are full fine-tuning's (a frozen layer's input is still saved, now for the
  adapter's gradient instead of the weight's) plus, per adapted layer, A's output (r values a
  token, bf16) for B's gradient. ``model.lora.dropout`` adds nothing: the online learner zeroes
  every dropout, LoRA's included, so its log-probs agree with the rollout's.
- Weight sync sends the adapters only (bf16): rollout workers keep the base weights they loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayrlhf.planner import memory as m
from rayrlhf.planner.shapes import Linear, ModelShape

ALL_LINEAR = "all-linear"
REFERENCE_MODES = ("workers", "learner", "none")


def adapted(linears: tuple[Linear, ...], targets: str | tuple[str, ...]) -> list[Linear]:
    """The linear layers LoRA adapts: all of them, or those named (peft's suffix rule)."""
    if targets == ALL_LINEAR:
        return list(linears)
    return [lin for lin in linears if any(lin[0] == t or lin[0].endswith("." + t) for t in targets)]


def adapter_params(linears: tuple[Linear, ...], rank: int, targets: str | tuple[str, ...]) -> int:
    """Adapter parameters: r·(d_in + d_out) per adapted layer."""
    return sum(rank * (d_in + d_out) for _, d_in, d_out in adapted(linears, targets))


@dataclass(frozen=True)
class Adapters:
    """One LoRA-wrapped model in parameters: what trains, what stays frozen, the largest
    trained module (ZeRO-3 gathers its weights and gradients at once)."""

    trainable: int
    frozen: int
    largest: int


def adapters_of(
    linears: tuple[Linear, ...], rank: int, targets: str | tuple[str, ...], total: int, head: int
) -> Adapters:
    """``total`` parameters of which ``head`` (a value model's scalar head) train whole."""
    layers = adapted(linears, targets)
    biggest = max((rank * max(d_in, d_out) for _, d_in, d_out in layers), default=0)
    return Adapters(
        trainable=adapter_params(linears, rank, targets) + head,
        frozen=total - head,
        largest=max(biggest, head),
    )


@dataclass(frozen=True)
class LoraPlan:
    """``model.lora`` applied to a shape: the policy's and value model's adapters, and how many
    of the policy's layers are adapted (each saves A's output for backward)."""

    rank: int
    targets: str | tuple[str, ...]
    policy: Adapters
    value: Adapters | None
    layers_adapted: int

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        val = self.value
        return {
            "rank": self.rank,
            "target_modules": self.targets if self.targets == ALL_LINEAR else list(self.targets),
            "policy_adapter_params": self.policy.trainable,
            "value_trainable_params": val.trainable if val else 0,
            "layers_adapted": self.layers_adapted,
        }


def lora_plan(
    shape: ModelShape, rank: int, targets: str | tuple[str, ...] = ALL_LINEAR
) -> LoraPlan:
    """LoRA of rank ``rank`` on ``shape``; ValueError when ``targets`` names no linear layer."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    layers = adapted(shape.linears, targets)
    if not layers:
        known = sorted({name.rsplit(".", 1)[-1] for name, _, _ in shape.linears})
        raise ValueError(
            f"target_modules {list(targets)} name no linear layer of {shape.name} "
            f"(its linear layers: {', '.join(known)})"
        )
    value = None
    if shape.value_params:
        head = shape.hidden + 1
        value = adapters_of(shape.value_linears, rank, targets, shape.value_params, head)
    return LoraPlan(
        rank=rank,
        targets=targets,
        policy=adapters_of(shape.linears, rank, targets, shape.params, 0),
        value=value,
        layers_adapted=len(layers),
    )


@dataclass(frozen=True)
class Tuning:
    """What trains and where the reference runs: ``lora`` None is full fine-tuning;
    ``reference`` is ``workers`` (GPUs of their own), ``learner`` (the learner's forward with
    adapters disabled: no reference GPUs, one more forward a step) or ``none`` (no KL)."""

    lora: LoraPlan | None = None
    reference: str = "workers"

    @property
    def reference_gpus(self) -> bool:
        """Whether reference workers hold a copy of the policy on GPUs of their own."""
        return self.reference == "workers"


# Full fine-tuning with reference workers: what a plan assumes unless told otherwise.
FULL = Tuning()


def lora_state_bytes(
    ad: Adapters, largest_layer: int, n_ranks: int, stage: int, offload: str
) -> dict[str, int]:
    """Per-GPU model states of one LoRA-wrapped model: the trained parameters' states
    (:func:`rayrlhf.planner.memory.model_state_bytes`) plus ``frozen16``, the base weights."""
    out = m.model_state_bytes(ad.trainable, ad.largest, n_ranks, stage, offload)
    frozen = m.BF16 * ad.frozen
    if stage == 3:
        frozen = 0 if offload == "optimizer+params" else m.BF16 * (ad.frozen // n_ranks)
        out["live"] += m.BF16 * largest_layer  # a gathered frozen layer: weights, no gradient
    out["frozen16"] = frozen
    return out


def frozen_cpu_bytes(ad: Adapters, offload: str, ranks_on_node: int, n_ranks: int) -> int:
    """CPU bytes of the frozen partitions parameter offload keeps on one node."""
    if offload != "optimizer+params":
        return 0
    return m.BF16 * ad.frozen * ranks_on_node // n_ranks


def offloaded_cpu_bytes(
    shape: ModelShape, tune: Tuning, offload: str, ranks_on_node: int, n_ranks: int, value: bool
) -> int:
    """CPU bytes of the offloaded states on one node: the policy's, and the value model's too
    when ``value``; with LoRA the trained parameters' states and the frozen partitions."""
    lp = tune.lora
    if lp is None:
        params = shape.params + (shape.value_params if value else 0)
        return m.offload_cpu_bytes(params, offload, ranks_on_node, n_ranks)
    models = [lp.policy] + ([lp.value] if value and lp.value else [])
    return sum(
        m.offload_cpu_bytes(ad.trainable, offload, ranks_on_node, n_ranks)
        + frozen_cpu_bytes(ad, offload, ranks_on_node, n_ranks)
        for ad in models
    )


def extra_activation_bytes(lp: LoraPlan, seq: int, batch: int, layers: int, ckpt: bool) -> int:
    """What the policy's adapters add to one micro-batch's saved activations: per adapted layer
    A's output (s·b·r, bf16) for B's gradient. With checkpointing only the one layer recomputed
    in backward holds them (the layers are alike: the total over ``layers``).
    """
    total = seq * batch * m.BF16 * lp.rank * lp.layers_adapted
    return total // layers if ckpt else total


def sync_bytes(shape: ModelShape, tune: Tuning) -> dict[str, int]:
    """Bytes one weight sync sends (bf16): the adapters with LoRA, else the whole policy."""
    full = m.BF16 * shape.params
    sent = full if tune.lora is None else m.BF16 * tune.lora.policy.trainable
    return {"sent": sent, "full": full}
