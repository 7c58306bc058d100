"""Place PPO's roles on GPUs and add up each GPU's memory for every ZeRO stage / offload choice.

The plan follows what rayrlhf runs: every role is a long-lived Ray actor, so the learner's
states, the rollout workers' weights + KV cache and the reference / reward models are resident at
the same time (nothing is swapped out between phases). One learner rank or one rollout worker
per GPU; the GPUs left over hold the reference and reward workers (half each, or both on one GPU
with ``num_gpus: 0.5`` when one is left). One- and two-GPU machines share a GPU between roles
through fractional ``num_gpus`` (:mod:`rayrlhf.planner.shared`). Figures are bytes; see
:mod:`rayrlhf.planner.memory`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from rayrlhf.planner import memory as m
from rayrlhf.planner import shared as sh
from rayrlhf.planner.shapes import ModelShape


@dataclass(frozen=True)
class Cluster:
    """Nodes × GPUs per node; memory per GPU and per node in GiB."""

    nodes: int = 1
    gpus_per_node: int = 8
    gpu_mem_gib: float = 80.0
    cpu_mem_gib: float = 1024.0

    @property
    def gpus(self) -> int:
        """All GPUs in the cluster."""
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Workload:
    """Token shapes: training micro-batch, prompt+response length, sequences per generate call;
    the rollout engine: ``vllm_memory`` is vLLM's ``gpu_memory_utilization`` (None: Hugging
    Face generate) and ``tensor_parallel`` the GPUs one engine spans."""

    micro_batch: int = 1
    seq_len: int = 1024
    rollout_batch: int = 16
    flash: bool = False
    vllm_memory: float | None = None
    tensor_parallel: int = 1


@dataclass(frozen=True)
class Placement:
    """GPUs per role; ``shared``: reference and reward share one GPU (0.5 each); ``spread``: the
    learner ranks are spread evenly over the nodes (``learner.placement: spread``) instead of
    packed onto the first ones; ``colocated``: the roles sharing one GPU with fractional
    ``num_gpus`` on a one- or two-GPU machine (the counts are then one process per role)."""

    learner: int
    rollout: int
    reference: int
    reward: int
    shared: bool = False
    spread: bool = False
    colocated: tuple[str, ...] = ()

    @property
    def learner_shares(self) -> bool:
        """Whether the learner rank shares its GPU with other roles (a one-GPU machine)."""
        return "learner" in self.colocated

    def num_gpus(self) -> dict[str, float]:
        """Ray's ``num_gpus`` per role of a co-located placement (empty for whole GPUs)."""
        if not self.colocated:
            return {}
        whole = {} if self.learner_shares else {"learner": 1.0}
        return whole | sh.fractions(self.colocated)

    def roles_on_node0(self, cluster: Cluster) -> list[str]:
        """The roles of node 0's GPUs (the busiest node: learner rank 0 and weight sync)."""
        if self.colocated:  # one process per role: the learner's GPU 0, and GPU 1 if on node 0
            beside = self.learner_shares or cluster.gpus_per_node > 1
            return ["learner"] + [r for r in self.colocated if r != "learner" and beside]
        other = ["reference+reward"] if self.shared else ["reference"] * self.reference
        other += [] if self.shared else ["reward"] * self.reward
        n = cluster.gpus_per_node
        ranks = -(-self.learner // cluster.nodes) if self.spread else self.learner
        ranks = min(ranks, n)
        return (["learner"] * ranks + ["rollout"] * self.rollout + other)[:n]


def place(
    cluster: Cluster, learner: int, rollout: int, reward_model: bool, spread: bool = False
) -> Placement:
    """Split the cluster's GPUs; raises ValueError when a role gets none.

    One learner rank and one rollout worker on a one- or two-GPU machine share GPUs instead
    (fractional ``num_gpus``, :mod:`rayrlhf.planner.shared`).
    """
    left = cluster.gpus - learner - rollout
    if left < 1 and learner == rollout == 1 and cluster.gpus in (1, 2):
        roles = sh.colocated_roles(cluster.gpus, reward_model)
        return Placement(1, 1, 1, int(reward_model), spread=spread, colocated=roles)
    if learner < 1 or rollout < 1 or left < 1:
        raise ValueError(
            f"{cluster.gpus} GPUs cannot hold {learner} learner + {rollout} rollout GPUs and "
            "at least one GPU for reference/reward"
        )
    if not reward_model:  # a reward function runs on CPU
        return Placement(learner, rollout, left, 0, spread=spread)
    if left == 1:
        return Placement(learner, rollout, 1, 1, shared=True, spread=spread)
    return Placement(learner, rollout, (left + 1) // 2, left // 2, spread=spread)


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


def learner_row(
    shape: ModelShape,
    reward: ModelShape | None,
    cluster: Cluster,
    work: Workload,
    plc: Placement,
    stage: int,
    offload: str,
) -> LearnerRow:
    """Per-GPU memory of a learner rank holding policy and value engines (one runs at a time)."""
    n = plc.learner
    pol = m.model_state_bytes(shape.params, shape.largest_layer, n, stage, offload)
    val = m.model_state_bytes(shape.value_params, shape.value_largest_layer, n, stage, offload)
    states = {k: pol[k] + val[k] for k in pol}
    states["live"] = max(pol["live"], val["live"])  # gathered layers are released after use
    if stage > 0:  # ZeRO makes the fp32 gradients at each engine's step and frees them after
        states["grad32"] = max(pol["grad32"], val["grad32"])
    engines = 2 if shape.value_params else 1  # critic-free algorithms build no value engine
    states["buffers"] = engines * m.deepspeed_buffer_bytes(stage)  # each has its own buckets
    acts = {
        ck: m.activation_bytes(
            work.seq_len,
            work.micro_batch,
            shape.hidden,
            shape.heads,
            shape.layers,
            shape.vocab,
            ck,
            work.flash,
        )
        for ck in (False, True)
    }
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
        pol_resident = sum(pol.values()) - pol["live"] - pol["grad32"]
        start = max(m.BF16 * shape.params, pol_resident + m.BF16 * shape.value_params)
    row.init_peak = m.with_overhead(start)[1]
    row.cpu_node = learner_cpu_bytes(shape, reward, cluster, plc, offload, zero_init=stage == 3)
    return row


def learner_cpu_bytes(
    shape: ModelShape,
    reward: ModelShape | None,
    cluster: Cluster,
    plc: Placement,
    offload: str,
    zero_init: bool = False,
) -> int:
    """CPU bytes on node 0 (the busiest): the worst of load, engine build and steady state.

    Load: every learner rank holds fp32 policy + value (below ZeRO-3; under ZeRO-3 zero.Init
    builds them partitioned, one layer at a time) while the node's other actors load bf16
    copies. Build: the policy's offloaded
    states plus the still unpartitioned fp32 value model. Steady: offloaded states plus weight
    sync (rank 0's gathered bf16 weights, their object-store copy, one per rollout worker there).
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
    build = m.offload_cpu_bytes(shape.params, offload, r, plc.learner)
    build += m.load_cpu_bytes(
        shape.value_params, shape.value_largest_layer, r, m.FP32, zero_init=zero_init
    )
    sync = (2 + on_node.count("rollout")) * pol16
    steady = m.offload_cpu_bytes(both, offload, r, plc.learner) + sync
    return max(load, build, steady)


def rollout_gpu(policy: ModelShape, work: Workload, gpu_mem: int) -> dict[str, int]:
    """Per-GPU bytes of a rollout worker: its weights, KV cache and transients.

    Hugging Face generate holds what one batch needs. vLLM takes ``vllm_memory`` of the GPU at
    start and keeps it: weights (split over ``tensor_parallel`` GPUs), activations, and all the
    rest as KV cache; the plan fails when that share cannot hold one batch's KV cache.
    """
    s, b, p, tp = work.seq_len, work.rollout_batch, policy, work.tensor_parallel
    parts = {
        "weights": m.BF16 * p.params // tp,
        "kv_cache": m.kv_cache_bytes(p.layers, p.kv_heads, p.head_dim, b, s) // tp,
        # Prefill of one layer + per-token fp32 logits for sampling (only the last position).
        "transient": m.layer_activation_bytes(s, b, p.hidden, p.heads // tp, work.flash)
        + b * p.vocab * (m.BF16 + m.FP32),
    }
    if work.vllm_memory is None:
        return parts
    share = int(work.vllm_memory * gpu_mem)
    needed = sum(parts.values())
    # vLLM hands whatever its share leaves to the KV cache (more batches in flight, not less).
    parts["kv_cache"] = max(parts["kv_cache"], share - parts["weights"] - parts["transient"])
    parts["overhead"] = m.CONTEXT_BYTES  # its allocation is up front: no fragmentation on top
    parts["total"] = sum(parts.values())
    if needed > share:  # the engine refuses to start: raise gpu_memory_utilization or TP
        parts["short_of_vllm_share"] = needed - share
    return parts


def gpu_fits(parts: dict[str, int], gpu_mem: int) -> bool:
    """Whether a non-learner GPU's parts fit its memory (and vLLM's share holds a batch)."""
    return parts["total"] <= gpu_mem and not parts.get("short_of_vllm_share")


def other_gpus(
    policy: ModelShape,
    reward: ModelShape | None,
    work: Workload,
    plc: Placement,
    gpu_mem: int = 80 * m.GIB,
) -> dict[str, dict[str, int]]:
    """Per-GPU bytes of the non-learner GPU kinds: rollout, reference, reward (or shared)."""
    s = work.seq_len
    b = work.rollout_batch
    p = policy
    rollout = rollout_gpu(policy, work, gpu_mem)
    ref = {
        "weights": m.BF16 * p.params,
        "transient": m.inference_bytes(s, b, p.hidden, p.heads, p.vocab, work.flash),
    }
    out = {"rollout": rollout}
    rew = None
    if reward is not None:
        rew = {
            "weights": m.BF16 * reward.value_params,
            "transient": m.inference_bytes(s, b, reward.hidden, reward.heads, 0, work.flash),
        }
    if plc.shared and rew is not None:
        out["reference+reward"] = {f"ref_{k}": v for k, v in ref.items()} | {
            f"reward_{k}": v for k, v in rew.items()
        }
    else:
        out["reference"] = ref
        if rew is not None:
            out["reward"] = rew
    for name, parts in out.items():
        if "total" in parts:  # vLLM's rollout: sized up front
            continue
        procs = 2 if name == "reference+reward" else 1
        parts["overhead"], parts["total"] = m.with_overhead(sum(parts.values()), procs)
    return out


def options(stages: list[int]) -> list[tuple[int, str]]:
    """The (stage, offload) pairs DeepSpeed runs, in table order."""
    out = []
    for st in stages:
        for off in m.OFFLOADS:
            if (st == 0 and off != "none") or (off == "optimizer+params" and st != 3):
                continue
            out.append((st, off))
    return out


def preferred(
    rows: list[LearnerRow], cluster: Cluster, others_fit: bool, gpu_bytes: float | None = None
) -> list[tuple]:
    """Fitting (row, checkpointing) pairs, fastest first: least offload, no recompute, low stage.

    ``gpu_bytes``: the learner rank's budget (default: the whole GPU; less on a shared one).
    """
    if not others_fit:
        return []
    gpu = cluster.gpu_mem_gib * m.GIB if gpu_bytes is None else gpu_bytes
    cpu = cluster.cpu_mem_gib * m.GIB
    fits = [(r, ck) for r in rows for ck in (False, True) if r.fits(ck, gpu, cpu)]
    return sorted(fits, key=lambda x: (m.OFFLOADS.index(x[0].offload), x[1], x[0].stage))


def plan(
    shape: ModelShape,
    reward: ModelShape | None,
    cluster: Cluster,
    work: Workload,
    plc: Placement,
    stages: list[int],
) -> dict[str, Any]:
    """Learner rows for every choice, the other GPUs, and the fitting choices, preferred first.

    ``learner_budget``: the bytes a learner rank may use (the GPU, less what co-located roles
    hold); ``shared``: the shared GPU of a co-located placement (None otherwise).
    """
    rows = [learner_row(shape, reward, cluster, work, plc, st, off) for st, off in options(stages)]
    gpu = int(cluster.gpu_mem_gib * m.GIB)
    others = other_gpus(shape, reward, work, plc, gpu)
    others_fit = all(gpu_fits(v, gpu) for v in others.values())
    budget: float = cluster.gpu_mem_gib * m.GIB
    shared = None
    if plc.colocated:
        need = min((max(min(r.total.values()), r.init_peak) for r in rows), default=0)
        # What vLLM needs at the least: weights and one batch (Hugging Face generate's sizing).
        hf = rollout_gpu(shape, replace(work, vllm_memory=None), gpu)
        shared = sh.shared_gpu(others, plc.colocated, gpu, need, work.vllm_memory, sum(hf.values()))
        others_fit = others_fit and shared["free"] >= 0  # co-located processes add up
        if shared["learner_budget"] is not None:
            budget = shared["learner_budget"]
    return {
        "rows": rows,
        "others": others,
        "others_fit": others_fit,
        "fitting": preferred(rows, cluster, others_fit, budget),
        "learner_budget": budget,
        "shared": shared,
    }


def search(
    shape: ModelShape,
    reward: ModelShape | None,
    cluster: Cluster,
    work: Workload,
    stages: list[int],
    spread: bool = False,
) -> tuple[Placement, tuple] | None:
    """Another learner/rollout split that fits (least offload first, then most learner GPUs)."""
    best = None
    for lrn in range(cluster.gpus - 2, 0, -1):
        for ro in range(1, cluster.gpus - lrn):
            plc = place(cluster, lrn, ro, reward is not None, spread)
            fit = plan(shape, reward, cluster, work, plc, stages)["fitting"]
            if fit:
                key = (m.OFFLOADS.index(fit[0][0].offload), fit[0][1])
                if best is None or key < best[0]:
                    best = (key, plc, fit[0])
    return None if best is None else (best[1], best[2])
