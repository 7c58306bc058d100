"""Report for benchmarks/control_plane.py: the table, the bottleneck verdict and the PNG."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

# Per-step phases (seconds, means over the timed steps), in the order they happen.
PHASES = {
    "dispatch": "driver: step_chunks + submit generate/score/logprobs for every chunk",
    "to_ready": "step start → every rollout, score and reference of the step is ready",
    "gen_tail": "to_ready − chunks_per_worker × latency: call latency, queueing, scoring tail",
    "fetch": "learner: ray.get of its shard (object transfer + deserialisation)",
    "learn": "ready → driver has the learner's metrics (fetch, join, return)",
    "weight_sync": "policy_state_dict → object store → load_weights on every rollout worker",
    "loop": "between train_step calls: control mailbox, metrics logging, status report",
}


def bottleneck(rows: list[dict[str, Any]], gen_s: float) -> str:
    """Which phase grew most from the smallest to the largest worker count, and by how much."""
    first, last = rows[0], rows[-1]
    # dispatch overlaps generation (workers start on the first chunks while the driver submits
    # the rest): it is reported, but the overhead is split over the phases that do not overlap.
    parts = ("gen_tail", "learn", "weight_sync", "loop")
    growth = {p: last[f"{p}_s"] - first[f"{p}_s"] for p in parts}
    worst = max(growth, key=lambda p: growth[p])
    slope = growth[worst] / max(last["workers"] - first["workers"], 1)
    # Efficiency vs linear is first period / last period: 0.8 allows 1.25 × the first period.
    budget = 1.25 * first["period_s"]
    shares = ", ".join(f"{p} {last[f'{p}_s']:.3f}s" for p in parts)
    return (
        f"at {last['workers']} workers a step takes {last['period_s']:.2f}s for {gen_s:.2f}s of "
        f"simulated generation (overhead {last['overhead_s']:.2f}s: {shares}; driver dispatch "
        f"{last['dispatch_s']:.3f}s, overlapped); 0.8 x linear allows {budget:.2f}s. Largest "
        f"growth from {first['workers']} to {last['workers']} workers: {worst} "
        f"+{growth[worst]:.3f}s (~{1000 * slope:.0f} ms per added worker)"
    )


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The human-readable table on stdout."""
    print(
        f"control-plane scaling — generation SIMULATED: fixed {args.latency}s sleep per chunk of "
        f"{args.chunk_size} prompts, {args.chunks_per_worker} chunks per worker per step, "
        f"response {args.response_tokens} tokens, weights {args.weights_mb} MB; "
        f"{args.steps} timed steps after 1 warm-up; real driver, buffer, object store; "
        f"{os.cpu_count()} CPU cores shared by all actors"
    )
    cols = [
        ("R", "workers", "{:>3d}"),
        ("samples", "samples_per_step", "{:>7d}"),
        ("samples/s", "samples_per_s", "{:>9.1f}"),
        ("linear", "linear_samples_per_s", "{:>8.1f}"),
        ("eff", "efficiency", "{:>5.2f}"),
        ("bound", "bound_samples_per_s", "{:>7.1f}"),
        ("eff_b", "efficiency_vs_bound", "{:>5.2f}"),
        ("step_s", "period_s", "{:>6.3f}"),
        ("dispatch", "dispatch_s", "{:>8.3f}"),
        ("gen_tail", "gen_tail_s", "{:>8.3f}"),
        ("fetch", "fetch_s", "{:>6.3f}"),
        ("learn", "learn_s", "{:>6.3f}"),
        ("wsync", "weight_sync_s", "{:>6.3f}"),
        ("loop", "loop_s", "{:>6.3f}"),
        ("warm_s", "warmup_step_s", "{:>6.1f}"),
    ]
    widths = [len(fmt.format(0 if "d}" in fmt else 0.0)) for _, _, fmt in cols]
    print("  ".join(h.rjust(w) for (h, _, _), w in zip(cols, widths, strict=True)))
    for row in rows:
        print("  ".join(fmt.format(row[key]) for _, key, fmt in cols))
    print(
        "eff = samples/s ÷ (R × samples/s at R=" + str(rows[0]["workers"]) + "); "
        "bound = R × chunk / latency (generation alone); step_s = logged step period"
    )
    for name, what in PHASES.items():
        print(f"  {name}: {what}")


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    """samples/s vs rollout workers (log-log) with the linear line; efficiency on the right."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = [row["workers"] for row in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(r, [row["samples_per_s"] for row in rows], "o-", label="measured samples/s")
    ax.plot(r, [row["linear_samples_per_s"] for row in rows], "--", color="grey", label="linear")
    ax.plot(
        r, [row["bound_samples_per_s"] for row in rows], ":", color="black", label="latency bound"
    )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(r, [str(x) for x in r])
    ax.set_xlabel("rollout workers")
    ax.set_ylabel("samples / s")
    eff = ax.twinx()
    eff.plot(r, [row["efficiency"] for row in rows], "s-", color="tab:red", label="efficiency")
    eff.axhline(0.8, color="tab:red", linestyle=":", linewidth=1, label="target 0.8")
    eff.set_ylim(0, 1.1)
    eff.set_ylabel("efficiency (vs linear)", color="tab:red")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    handles, labels = ax.get_legend_handles_labels()
    eff_handles, eff_labels = eff.get_legend_handles_labels()
    # Below the plot: inside it, the legend would sit on top of (or under) the curves.
    fig.legend(
        handles + eff_handles,
        labels + eff_labels,
        loc="lower center",
        ncol=5,
        fontsize=8,
        frameon=False,
    )
    ax.set_title(
        f"rayrlhf control plane, SIMULATED generation ({args.latency}s/chunk of "
        f"{args.chunk_size}, {args.weights_mb:g} MB weights)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
