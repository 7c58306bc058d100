"""Text for one- and two-GPU machines: the shared GPU's table and why a placement does not fit.

See :mod:`rayrlhf.planner.shared` for the placement and its memory; figures printed in GiB.
"""

from __future__ import annotations

from typing import Any

from rayrlhf.planner import memory as m
from rayrlhf.planner import shared as sh
from rayrlhf.planner.plan import Cluster, Placement, gpu_fits


def _left(shared: dict[str, Any]) -> str:
    """What the other roles leave of the shared GPU, in words."""
    free = shared["free"] / m.GIB
    return f"{free:.1f} GiB" if free >= 0 else f"nothing ({-free:.1f} GiB over)"


def shared_why(p: dict[str, Any], cl: Cluster, plc: Placement) -> list[str]:
    """Why a one- or two-GPU placement does not fit: the shared GPU, vLLM's share, the learner."""
    shared, out = p["shared"], []
    others = ", ".join(r for r in plc.colocated if r != "learner")
    if shared["free"] < 0:
        need = f"{shared['used'] / m.GIB:.1f} GiB of GPU {shared['gpu']}'s {cl.gpu_mem_gib:g}"
        tail = ", before the learner rank." if plc.learner_shares else "."
        out.append(f"  {others.capitalize()} alone need {need}{tail}")
    vllm = shared["vllm"]
    if vllm is not None and p["others"]["rollout"].get("short_of_vllm_share"):
        out.append(
            f"  vLLM's gpu_memory_utilization {vllm['share']:g} cannot hold its weights and one "
            f"batch: it needs at least {vllm['least']:g}."
        )
    if plc.learner_shares and p["others_fit"]:
        out.append(f"  Left for the learner rank on GPU 0: {_left(shared)} (table above).")
    return out


def shared_table(p: dict[str, Any], cl: Cluster, plc: Placement) -> str:
    """The shared GPU of a one- or two-GPU machine: one line per role (process), then the sum."""
    shared, gpu = p["shared"], int(cl.gpu_mem_gib * m.GIB)
    frac = plc.num_gpus()
    out = [
        f"GPU {shared['gpu']} shared by {', '.join(plc.colocated)}, GiB (all roles stay resident "
        "between phases; each process has its own CUDA context and fragmentation)"
    ]
    for role in plc.colocated:
        head = f"  {role:10} num_gpus {frac[role]:<6g}: "
        if role == "learner":
            out.append(head + f"learner table above; the others leave it {_left(shared)}")
            continue
        parts = p["others"][role]
        comp = ", ".join(f"{k} {v / m.GIB:.1f}" for k, v in parts.items() if k != "total")
        bad = "" if gpu_fits(parts, gpu) else "  DOES NOT FIT"
        out.append(head + f"{comp}; total {parts['total'] / m.GIB:.1f}{bad}")
    fit = "FITS" if shared["free"] >= 0 else "DOES NOT FIT"
    tail = f"; left for the learner rank: {_left(shared)}" if plc.learner_shares else ""
    out.append(f"  GPU {shared['gpu']}: {sh.sum_line(shared)} of {cl.gpu_mem_gib:g}{tail}  {fit}")
    if not plc.learner_shares:
        out.insert(0, f"GPU 0: the learner rank alone (num_gpus {frac['learner']:g}), table above")
    return "\n".join(out)
