"""A learner rank's memory for one ZeRO stage / offload choice: GPU (steady and start-up) and
the CPU of its node. Full fine-tuning or LoRA (:mod:`rayrlhf.planner.lora`); figures are bytes,
formulas in :mod:`rayrlhf.planner.memory`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayrlhf.planner import lora
from rayrlhf.planner import memory as m
from rayrlhf.planner.placement import Cluster, Placement, Workload
from rayrlhf.planner.shapes import ModelShape


@dataclass
class LearnerRow:
    """One (stage, offload) choice on a learner GPU: components and totals, bytes."""

    stage: int
    offload: str
    states: dict[str, int]
    activations: dict[bool, int]  # checkpointing → bytes
    total: dict[bool, int] = field(default_factory=dict)
    init_peak: int = 0
    cpu_node: int = 0  # CPU bytes on the busiest learner node

    def fits(self, ckpt: bool, gpu_bytes: float, cpu_bytes: float) -> bool:
        """Steady state, engine start-up and the node's CPU memory all within limits."""
        return max(self.total[ckpt], self.init_peak) <= gpu_bytes and self.cpu_node <= cpu_bytes

    def as_dict(self) -> dict[str, Any]:
        """Plain data (GiB) for JSON output."""
        gib = {k: v / m.GIB for k, v in self.states.items()}
        return {
            "stage": self.stage,
            "offload": self.offload,
            "gib": gib,
            "activations_gib": {
                "no_ckpt": self.activations[False] / m.GIB,
                "ckpt": self.activations[True] / m.GIB,
            },
            "total_gib": {"no_ckpt": self.total[False] / m.GIB, "ckpt": self.total[True] / m.GIB},
            "init_peak_gib": self.init_peak / m.GIB,
            "cpu_node_gib": self.cpu_node / m.GIB,
        }


def engine_states(
    shape: ModelShape, tune: lora.Tuning, n: int, stage: int, offload: str
) -> tuple[dict[str, int], dict[str, int]]:
    """Per-GPU states of the policy and of the value model (zeros without a critic)."""
    lp = tune.lora
    if lp is None:
        pol = m.model_state_bytes(shape.params, shape.largest_layer, n, stage, offload)
        val = m.model_state_bytes(shape.value_params, shape.value_largest_layer, n, stage, offload)
        return pol, val
    pol = lora.lora_state_bytes(lp.policy, shape.largest_layer, n, stage, offload)
    if lp.value is None:
        return pol, dict.fromkeys(pol, 0)
    return pol, lora.lora_state_bytes(lp.value, shape.value_largest_layer, n, stage, offload)


def module_params(shape: ModelShape, tune: lora.Tuning) -> tuple[int, int]:
    """Parameters of the policy and value modules as built: with LoRA, plus their adapters."""
    lp = tune.lora
    if lp is None:
        return shape.params, shape.value_params
    val = lp.value.frozen + lp.value.trainable if lp.value else 0
    return lp.policy.frozen + lp.policy.trainable, val


def learner_row(
    shape: ModelShape,
    reward: ModelShape | None,
    cluster: Cluster,
    work: Workload,
    plc: Placement,
    stage: int,
    offload: str,
    tune: lora.Tuning = lora.FULL,
) -> LearnerRow:
    """Per-GPU memory of a learner rank holding policy and value engines (one runs at a time).

    A reference computed here (``tune.reference == "learner"``) is one more no-grad forward of
    micro-batch rows, like the old log-probs' forward: it adds time, and no memory to the peak.
    """
    n = plc.learner
    pol, val = engine_states(shape, tune, n, stage, offload)
    states = {k: pol[k] + val[k] for k in pol}
    states["live"] = max(pol["live"], val["live"])  # gathered layers are released after use
    if stage > 0:  # ZeRO makes the fp32 gradients at each engine's step and frees them after
        states["grad32"] = max(pol["grad32"], val["grad32"])
    engines = 2 if shape.value_params else 1  # critic-free algorithms build no value engine
    states["buffers"] = engines * m.deepspeed_buffer_bytes(stage)  # each has its own buckets
    acts = {}
    for ck in (False, True):
        acts[ck] = m.activation_bytes(
            work.seq_len,
            work.micro_batch,
            shape.hidden,
            shape.heads,
            shape.layers,
            shape.vocab,
            ck,
            work.flash,
        )
        if tune.lora is not None:
            acts[ck] += lora.extra_activation_bytes(
                tune.lora, work.seq_len, work.micro_batch, shape.layers, ck
            )
    used = sum(states.values())
    total = {ck: m.with_overhead(used + acts[ck])[1] for ck in (False, True)}
    row = LearnerRow(stage, offload, states, acts, total)
    if stage == 3:
        # zero.Init (rayrlhf.engine.partitioned_loading): both models are built already
        # partitioned, so start-up never exceeds the steady model states.
        start = used
    else:
        # Without zero.Init DeepSpeed casts each model to bf16 and moves all of it onto the GPU
        # before partitioning; the value engine is built while the policy's states sit there.
        # (With LoRA the whole module: frozen base and adapters.)
        pol_all, val_all = module_params(shape, tune)
        pol_resident = sum(pol.values()) - pol["live"] - pol["grad32"]
        start = max(m.BF16 * pol_all, pol_resident + m.BF16 * val_all)
    row.init_peak = m.with_overhead(start)[1]
    row.cpu_node = learner_cpu_bytes(
        shape, reward, cluster, plc, offload, zero_init=stage == 3, tune=tune
    )
    return row


def learner_cpu_bytes(
    shape: ModelShape,
    reward: ModelShape | None,
    cluster: Cluster,
    plc: Placement,
    offload: str,
    zero_init: bool = False,
    tune: lora.Tuning = lora.FULL,
) -> int:
    """CPU bytes on node 0 (the busiest): the worst of load, engine build and steady state.

    Load: every learner rank holds fp32 policy + value (below ZeRO-3; under ZeRO-3 zero.Init
    builds them partitioned, one layer at a time) while the node's other actors load bf16
    copies. Build: the policy's offloaded states plus the still unpartitioned fp32 value model.
    Steady: offloaded states plus weight sync (rank 0's gathered bf16 weights, or with LoRA its
    adapters, their object-store copy, one per rollout worker there).
    """
    on_node = plc.roles_on_node0(cluster)
    r = on_node.count("learner")
    both = shape.params + shape.value_params
    pol16 = m.BF16 * shape.params
    rew16 = m.BF16 * reward.value_params if reward is not None else 0
    copies = {
        "rollout": pol16,
        "reference": pol16,
        "reward": rew16,
        "reference+reward": pol16 + rew16,
    }
    largest = shape.largest_layer + shape.value_largest_layer
    load = m.load_cpu_bytes(both, largest, r, m.FP32, zero_init=zero_init)
    load += sum(copies.get(x, 0) for x in on_node)
    build = lora.offloaded_cpu_bytes(shape, tune, offload, r, plc.learner, value=False)
    build += m.load_cpu_bytes(
        shape.value_params, shape.value_largest_layer, r, m.FP32, zero_init=zero_init
    )
    sync = (2 + on_node.count("rollout")) * lora.sync_bytes(shape, tune)["sent"]
    steady = lora.offloaded_cpu_bytes(shape, tune, offload, r, plc.learner, value=True) + sync
    return max(load, build, steady)
