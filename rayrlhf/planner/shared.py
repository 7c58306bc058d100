"""One- and two-GPU machines: PPO's roles share a GPU through Ray's fractional ``num_gpus``.

On one GPU every role (learner rank, rollout worker, reference, reward) shares GPU 0. On two the
learner has GPU 0 to itself and rollout, reference and reward share GPU 1. The learner goes alone
because its states, gradients and activations are the largest figures and the only ones ZeRO
offload and checkpointing can shrink, while the inference roles are small and fixed; it also keeps
vLLM's up-front ``gpu_memory_utilization`` away from the learner's GPU.

Memory on a shared GPU adds up: every role is its own process with its own CUDA context and
fragmentation (:func:`rayrlhf.planner.memory.with_overhead`), and the learner rank gets what the
others leave. The fractions only make Ray put the roles on one GPU (they add up to 1): Ray limits
no memory, so the plan checks it. Figures are bytes.
"""

from __future__ import annotations

import math
from typing import Any

from rayrlhf.planner import memory as m

ROLES = ("learner", "rollout", "reference", "reward")


def colocated_roles(gpus: int, reward_model: bool, reference: bool = True) -> tuple[str, ...]:
    """The roles that share one GPU: all of them on one GPU, all but the learner on two.

    A reward function runs on CPU; a reference computed by the learner (or none) needs no GPU.
    """
    roles = ROLES if gpus == 1 else ROLES[1:]
    absent = {"reward"} if not reward_model else set()
    absent |= {"reference"} if not reference else set()
    return tuple(r for r in roles if r not in absent)


def fractions(roles: tuple[str, ...]) -> dict[str, float]:
    """Ray ``num_gpus`` per role of one shared GPU: 1/2, 1/4, ..., the last two equal.

    Powers of two are exact in binary floating point, so they add up to exactly 1 and Ray packs
    every role onto the one GPU; the order (learner, rollout, reference, reward) only decides who
    gets the larger token, which Ray does not turn into memory.
    """
    out, left = {}, 1.0
    for i, role in enumerate(roles):
        out[role] = left if i == len(roles) - 1 else left / 2
        left -= out[role]
    return out


def shared_gpu(
    others: dict[str, dict[str, int]],
    roles: tuple[str, ...],
    gpu_bytes: int,
    learner_need: int,
    vllm_memory: float | None,
    vllm_needed: int,
) -> dict[str, Any]:
    """What the shared GPU holds: each inference role's total, their sum, the learner's budget.

    ``learner_need``: the smallest learner rank any (stage, offload, checkpointing) choice makes
    (steady or start-up), counted when the learner shares the GPU. ``vllm_needed``: the bytes
    vLLM needs for its weights and one batch; with ``vllm_memory`` set, ``vllm`` says whether
    that share of the GPU leaves room for the roles beside it, and the largest share that does.
    """
    totals = {r: others[r]["total"] for r in roles if r != "learner"}
    used = sum(totals.values())
    with_learner = "learner" in roles
    out: dict[str, Any] = {
        "gpu": 0 if with_learner else 1,
        "roles": roles,
        "totals": totals,
        "used": used,
        "free": gpu_bytes - used,
        # The learner rank's budget: the GPU minus every co-located process (contexts included).
        "learner_budget": gpu_bytes - used if with_learner else None,
        "vllm": None,
    }
    if vllm_memory is not None and "rollout" in totals:
        # vLLM reserves its share of the whole GPU at start and keeps it, plus its context.
        beside = used - totals["rollout"] + (learner_need if with_learner else 0)
        most = (gpu_bytes - m.CONTEXT_BYTES - beside) / gpu_bytes
        out["vllm"] = {
            "share": vllm_memory,
            "beside": beside,  # what the other roles on the GPU need
            "most": math.floor(most * 100) / 100,  # the largest share that leaves them room
            "least": math.ceil(vllm_needed / gpu_bytes * 100) / 100,  # weights + one batch
            "ok": vllm_memory <= most,
        }
    return out


def as_json(shared: dict[str, Any] | None) -> dict[str, Any] | None:
    """The shared GPU as plain data (GiB)."""
    if shared is None:
        return None
    out = {k: v for k, v in shared.items() if k not in ("totals", "used", "free", "learner_budget")}
    out["roles"] = list(shared["roles"])
    out["totals_gib"] = {r: v / m.GIB for r, v in shared["totals"].items()}
    out["used_gib"] = shared["used"] / m.GIB
    out["free_gib"] = shared["free"] / m.GIB
    budget = shared["learner_budget"]
    out["learner_budget_gib"] = None if budget is None else budget / m.GIB
    if shared["vllm"] is not None:
        vllm = dict(shared["vllm"])
        vllm["beside_gib"] = vllm.pop("beside") / m.GIB
        out["vllm"] = vllm
    return out


def settings(num_gpus: dict[str, float]) -> str:
    """The config lines to set, e.g. ``learner.num_gpus: 0.5, rollout.num_gpus: 0.25``."""
    return ", ".join(f"{role}.num_gpus: {frac:g}" for role, frac in num_gpus.items())


def sum_line(shared: dict[str, Any]) -> str:
    """``rollout 9.0 + reference 21.4 + reward 8.5 = 38.9`` (GiB) for the shared GPU's roles."""
    parts = " + ".join(f"{r} {v / m.GIB:.1f}" for r, v in shared["totals"].items())
    return f"{parts} = {shared['used'] / m.GIB:.1f}"


def vllm_flag(shared: dict[str, Any] | None) -> str | None:
    """A verdict line when vLLM's share of a shared GPU leaves the other roles too little."""
    if shared is None or shared["vllm"] is None or shared["vllm"]["ok"]:
        return None
    v, gpu = shared["vllm"], shared["gpu"]
    head = (
        f"  vLLM's gpu_memory_utilization {v['share']:g} leaves the roles beside it on GPU "
        f"{gpu} too little (they need {v['beside'] / m.GIB:.1f} GiB): "
    )
    if v["most"] >= v["least"]:
        return head + (
            f"set --vllm-memory (rollout.vllm.gpu_memory_utilization) to at most {v['most']:g} "
            f"(it needs at least {v['least']:g})."
        )
    return head + f"no share does: vLLM needs at least {v['least']:g} for one batch."
