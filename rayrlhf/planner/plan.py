"""Add up each GPU's memory for every ZeRO stage / offload choice, and search for a split.

The plan follows what rayrlhf runs: every role is a long-lived Ray actor, so the learner's
states, the rollout workers' weights + KV cache and the reference / reward models are resident at
the same time (nothing is swapped out between phases). Where the roles go:
:mod:`rayrlhf.planner.placement`; a learner rank: :mod:`rayrlhf.planner.learner`; LoRA and a
reference in the learner: :mod:`rayrlhf.planner.lora`. Figures are bytes; see
:mod:`rayrlhf.planner.memory`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rayrlhf.planner import memory as m
from rayrlhf.planner import shared as sh
from rayrlhf.planner.learner import LearnerRow, learner_cpu_bytes, learner_row
from rayrlhf.planner.lora import FULL, Tuning, sync_bytes
from rayrlhf.planner.placement import Cluster, Placement, Workload, place
from rayrlhf.planner.shapes import ModelShape

# Callers and tests import these from here: the plan's vocabulary in one place.
__all__ = [
    "Cluster",
    "LearnerRow",
    "Placement",
    "Tuning",
    "Workload",
    "gpu_fits",
    "learner_cpu_bytes",
    "learner_row",
    "other_gpus",
    "place",
    "plan",
    "rollout_gpu",
    "search",
]


def rollout_gpu(
    policy: ModelShape, work: Workload, gpu_mem: int, tune: Tuning = FULL
) -> dict[str, int]:
    """Per-GPU bytes of a rollout worker: its weights, KV cache and transients.

    Hugging Face generate holds what one batch needs. vLLM takes ``vllm_memory`` of the GPU at
    start and keeps it: weights (split over ``tensor_parallel`` GPUs), activations, and all the
    rest as KV cache; the plan fails when that share cannot hold one batch's KV cache. With LoRA
    the worker also holds the adapters it is sent (bf16) beside its base weights.
    """
    s, b, p, tp = work.seq_len, work.rollout_batch, policy, work.tensor_parallel
    adapters = sync_bytes(p, tune)["sent"] if tune.lora is not None else 0
    parts = {
        "weights": (m.BF16 * p.params + adapters) // tp,
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
    tune: Tuning = FULL,
) -> dict[str, dict[str, int]]:
    """Per-GPU bytes of the non-learner GPU kinds: rollout, reference (unless the learner
    computes it, or there is none), reward (or reference and reward sharing one GPU)."""
    s = work.seq_len
    b = work.rollout_batch
    p = policy
    rollout = rollout_gpu(policy, work, gpu_mem, tune)
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
    if not tune.reference_gpus:
        if rew is not None:
            out["reward"] = rew
    elif plc.shared and rew is not None:
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
    tune: Tuning = FULL,
) -> dict[str, Any]:
    """Learner rows for every choice, the other GPUs, and the fitting choices, preferred first.

    ``learner_budget``: the bytes a learner rank may use (the GPU, less what co-located roles
    hold); ``shared``: the shared GPU of a co-located placement (None otherwise).
    """
    rows = [
        learner_row(shape, reward, cluster, work, plc, st, off, tune) for st, off in options(stages)
    ]
    gpu = int(cluster.gpu_mem_gib * m.GIB)
    others = other_gpus(shape, reward, work, plc, gpu, tune)
    others_fit = all(gpu_fits(v, gpu) for v in others.values())
    budget: float = cluster.gpu_mem_gib * m.GIB
    shared = None
    if plc.colocated:
        need = min((max(min(r.total.values()), r.init_peak) for r in rows), default=0)
        # What vLLM needs at the least: weights and one batch (Hugging Face generate's sizing).
        hf = rollout_gpu(shape, replace(work, vllm_memory=None), gpu, tune)
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
        "tune": tune,
    }


def search(
    shape: ModelShape,
    reward: ModelShape | None,
    cluster: Cluster,
    work: Workload,
    stages: list[int],
    spread: bool = False,
    tune: Tuning = FULL,
) -> tuple[Placement, tuple] | None:
    """Another learner/rollout split that fits (least offload first, then most learner GPUs)."""
    best = None
    # Reference and reward want at least one GPU between them unless neither needs one.
    rest = int(tune.reference_gpus or reward is not None)
    for lrn in range(cluster.gpus - 1 - rest, 0, -1):
        for ro in range(1, cluster.gpus - lrn - rest + 1):
            plc = place(cluster, lrn, ro, reward is not None, spread, tune.reference_gpus)
            fit = plan(shape, reward, cluster, work, plc, stages, tune)["fitting"]
            if fit:
                key = (m.OFFLOADS.index(fit[0][0].offload), fit[0][1])
                if best is None or key < best[0]:
                    best = (key, plc, fit[0])
    return None if best is None else (best[1], best[2])
