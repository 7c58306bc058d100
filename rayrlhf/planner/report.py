"""Tables, verdict and JSON for a plan (``rayrlhf plan``'s entry point: :mod:`.command`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rayrlhf.planner import lora_report as lr
from rayrlhf.planner import memory as m
from rayrlhf.planner import shared as sh
from rayrlhf.planner.plan import Cluster, LearnerRow, Placement, Workload, gpu_fits
from rayrlhf.planner.shapes import ModelShape
from rayrlhf.planner.shared_report import shared_table, shared_why


def _g(x: float) -> str:
    return f"{x / m.GIB:7.1f}"


def _name(row: LearnerRow, ck: bool | None = None) -> str:
    s = f"ZeRO-{row.stage} offload={row.offload}"
    return s if ck is None else s + (" +ckpt" if ck else "")


def _why(row: LearnerRow, ck: bool, cl: Cluster, gpu: float, left: bool = False) -> str:
    """What a learner choice is over: ``gpu`` is the learner rank's budget in bytes, ``left``
    whether that is what co-located roles leave of the GPU (one GPU) rather than all of it."""
    cpu = cl.cpu_mem_gib * m.GIB
    unit = " GiB" if left else " GiB/GPU"
    why = []
    if row.total[ck] > gpu:
        why.append(f"{row.total[ck] / m.GIB:.0f}{unit}")
    if row.init_peak > gpu:
        why.append(f"start-up {row.init_peak / m.GIB:.0f}{unit}")
    if left and why:
        why[-1] += f" of {gpu / m.GIB:.1f} left"
    if row.cpu_node > cpu:
        why.append(f"{row.cpu_node / m.GIB:.0f} GiB CPU")
    return ", ".join(why)


def learner_table(p: dict[str, Any], cl: Cluster, shape: ModelShape, plc: Placement) -> str:
    """One line per (stage, offload, checkpointing): GiB per learner GPU by component."""
    cols, head = lr.columns(p["tune"])
    out = [
        f"Learner GPU (1 of {plc.learner} ranks; {lr.models_text(shape, p['tune'])}), GiB per "
        "GPU; fit = steady, start-up and CPU"
        + (
            f" (within the {p['learner_budget'] / m.GIB:.1f} GiB the roles sharing GPU 0 leave)"
            if plc.learner_shares
            else ""
        ),
        f"{'configuration':36}"
        + "".join(f"{h:>7}" for h in head)
        + f"{'act':>7}{'ovh':>7}{'total':>7}{'start':>7}{'CPU/nd':>7}  fit",
    ]
    gpu, cpu = p["learner_budget"], cl.cpu_mem_gib * m.GIB
    for row in p["rows"]:
        for ck in (False, True):
            used = sum(row.states.values()) + row.activations[ck]
            fit = "FITS" if row.fits(ck, gpu, cpu) else "DOES NOT FIT"
            out.append(
                f"{_name(row, ck):36}"
                + "".join(_g(row.states[c]) for c in cols)
                + _g(row.activations[ck])
                + _g(row.total[ck] - used)
                + _g(row.total[ck])
                + _g(row.init_peak)
                + _g(row.cpu_node)
                + f"  {fit}"
            )
    return "\n".join(out)


def others_table(p: dict[str, Any], cl: Cluster, plc: Placement) -> str:
    """One line per non-learner GPU kind (the shared GPU's roles on a one- or two-GPU machine)."""
    if plc.colocated:
        return shared_table(p, cl, plc)
    count = {
        "rollout": plc.rollout,
        "reference": plc.reference,
        "reward": plc.reward,
        "reference+reward": 1,
    }
    out = ["Other GPUs, GiB per GPU (all roles stay resident between phases)"]
    for name, parts in p["others"].items():
        fit = "FITS" if gpu_fits(parts, int(cl.gpu_mem_gib * m.GIB)) else "DOES NOT FIT"
        comp = ", ".join(f"{k} {v / m.GIB:.1f}" for k, v in parts.items() if k != "total")
        out.append(f"  {name:17} ×{count[name]}: {comp}; total {parts['total'] / m.GIB:.1f}  {fit}")
    return "\n".join(out)


def verdict(
    p: dict[str, Any], cl: Cluster, shape: ModelShape, plc: Placement, alt: Any = None
) -> list[str]:
    """Verdict lines: the fastest choice that fits, whether it needs offload, what does not fit."""
    hw = f"{cl.nodes}×{cl.gpus_per_node}×{cl.gpu_mem_gib:g} GiB GPUs"
    lines = []
    roles = lr.roles_text(plc, p["tune"])
    shared = p["shared"]
    left = ""  # on one GPU: the learner's budget, beside its figures
    if shared is not None:
        others = ", ".join(r for r in plc.colocated if r != "learner")
        if plc.learner_shares:
            left = f", of the {p['learner_budget'] / m.GIB:.1f} GiB left"
            roles = f"{others} beside it on GPU 0 using {sh.sum_line(shared)} GiB"
        else:
            roles = f"{others} sharing GPU 1 using {sh.sum_line(shared)} of {cl.gpu_mem_gib:g} GiB"
    if p["fitting"]:
        row, ck = p["fitting"][0]
        where = f"on {plc.learner} GPUs{' spread over the nodes' if plc.spread else ''}"
        if shared is not None:
            where = "rank on GPU 0" if plc.learner_shares else "rank alone on GPU 0"
        lines.append(
            f"VERDICT: {shape.name} ({shape.params / 1e9:.2f}B) trains with "
            f"{lr.training_text(p['tune'])} on {hw} with "
            f"{_name(row)}, gradient checkpointing {'on' if ck else 'off'}: learner {where} "
            f"({row.total[ck] / m.GIB:.1f} GiB/GPU, start-up "
            f"{row.init_peak / m.GIB:.1f}{left}), {roles}; CPU RAM on node 0 "
            f"{row.cpu_node / m.GIB:.0f} of {cl.cpu_mem_gib:g} GiB."
        )
        if shared is not None:
            lines.append(
                f"  Set {sh.settings(plc.num_gpus())} (Ray's fractional GPUs: they only place the "
                "roles; the memory is the plan's)."
            )
        if row.offload != "none":
            lines.append("  Only fits with CPU offload: no configuration without offload fits.")
        also = [_name(r, c) for r, c in p["fitting"][1:]]
        if also:
            more = f"; and {len(also) - 4} more (table)" if len(also) > 4 else ""
            lines.append("  Also fits: " + "; ".join(also[:4]) + more)
    else:
        lines.append(f"VERDICT: {shape.name} does NOT fit on {hw} with this placement ({roles}).")
        if shared is not None:
            lines += shared_why(p, cl, plc)
        elif not p["others_fit"]:
            lines.append("  A rollout/reference/reward GPU is over its memory (table above).")
        if alt is not None:
            aplc, (arow, ack) = alt
            lines.append(
                f"  Fits instead with --learner-gpus {aplc.learner} --rollout-gpus "
                f"{aplc.rollout}: {_name(arow, ack)} ({arow.total[ack] / m.GIB:.1f} GiB/GPU)."
            )
    flag = sh.vllm_flag(shared)
    if flag:
        lines.append(flag)
    fitting = {(r.stage, r.offload) for r, _ in p["fitting"]}
    budget, left = p["learner_budget"], plc.learner_shares
    over = [(r, _why(r, True, cl, budget, left)) for r in p["rows"]]
    over = [(r, why) for r, why in over if (r.stage, r.offload) not in fitting]
    # A choice within its own limits (another GPU over) has no reason of its own to print; on a
    # shared GPU nothing is listed when the others leave the learner nothing.
    over = [] if shared is not None and shared["free"] < 0 else [(r, w) for r, w in over if w]
    bad = [f"{_name(r)} ({why})" for r, why in over]
    if bad:
        lines.append("  Does not fit even with checkpointing: " + "; ".join(bad))
    return lines


def to_json(
    p: dict[str, Any],
    cl: Cluster,
    work: Workload,
    shape: ModelShape,
    reward: ModelShape | None,
    plc: Placement,
    lines: list[str],
) -> dict[str, Any]:
    """The whole plan as plain data (GiB)."""
    gpu, cpu = p["learner_budget"], cl.cpu_mem_gib * m.GIB
    rows = []
    for r in p["rows"]:
        d = r.as_dict()
        d["fits"] = {"no_ckpt": r.fits(False, gpu, cpu), "ckpt": r.fits(True, gpu, cpu)}
        rows.append(d)
    best = None
    if p["fitting"]:
        r, ck = p["fitting"][0]
        best = {
            "stage": r.stage,
            "offload": r.offload,
            "gradient_checkpointing": ck,
            "total_gib": r.total[ck] / m.GIB,
            "cpu_node_gib": r.cpu_node / m.GIB,
        }
    return {
        "model": shape.as_dict(),
        "reward_model": reward.as_dict() if reward else None,
        "cluster": asdict(cl),
        "workload": asdict(work),
        "placement": asdict(plc),
        "learner": rows,
        "other_gpus": {k: {n: v / m.GIB for n, v in d.items()} for k, d in p["others"].items()},
        "best": best,
        "verdict": lines,
        # One- and two-GPU machines: Ray's fractional num_gpus per role and the shared GPU.
        "num_gpus": plc.num_gpus() or None,
        "learner_budget_gib": p["learner_budget"] / m.GIB,
        "shared_gpu": sh.as_json(p["shared"]),
        # What trains (LoRA or everything), where the reference runs, weight sync's bytes.
        "tuning": lr.as_json(shape, p["tune"]),
    }
