"""PNG training curves from a run directory: ``rayrlhf plot RUN_DIR [--out DIR]``.

One figure per stage (``sft.png``, ``reward_model.png``, ``ppo.png``) with a panel per metric
group the run logged, plus ``overview.png`` (one headline panel per stage) for pipeline runs.
Panels are rows of the ``STAGE_PANELS`` table, so a new metric group is one line, not new code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

Rows = list[dict[str, Any]]
# folder → title
STAGES = {"sft": "SFT", "reward_model": "Reward model", "ppo": "PPO", "dpo": "DPO", "ilql": "ILQL"}
PHASES = " ".join(f"time/{p}" for p in "generate score reference values train weight_sync".split())
DPI = 110


@dataclass(frozen=True)
class Panel:
    """One subplot: which metric keys to draw, and how."""

    title: str
    ylabel: str
    keys: tuple[str, ...] = ()  # solid lines on the left axis
    twin: tuple[str, ...] = ()  # dashed lines on a right-hand axis with its own scale
    evals: tuple[str, ...] = ()  # sparse eval rows: markers joined by a thin line
    band: str | None = None  # std key: a ±band around keys[0]
    smooth: bool = False  # keys drawn faint with a moving average on top (noisy per-batch loss)
    stack: bool = False  # keys stacked (where the step's time goes), ``total`` as a line on top
    total: str | None = None
    chance: float | None = None  # dashed reference line: random-guess accuracy

    def all_keys(self) -> tuple[str, ...]:
        return self.keys + self.twin + self.evals + ((self.total,) if self.total else ())


def _p(title: str, ylabel: str, keys: str = "", twin: str = "", evals: str = "", **kw) -> Panel:
    """Table shorthand: key lists as space-separated strings."""
    return Panel(title, ylabel, *(tuple(k.split()) for k in (keys, twin, evals)), **kw)


_LOSS = _p("Loss", "loss", "loss/train", evals="eval/loss", smooth=True)
_STEP_TIME = _p("Step time", "seconds", "time/step", smooth=True)
STAGE_PANELS: dict[str, tuple[Panel, ...]] = {
    "sft": (
        _LOSS,
        _p("Eval perplexity", "perplexity", evals="eval/perplexity"),
        _p("Learning rate", "lr", "lr"),
        _STEP_TIME,
    ),
    "reward_model": (
        _LOSS,
        _p(
            "Accuracy", "accuracy", "train/accuracy", evals="eval/accuracy", smooth=True, chance=0.5
        ),
        _p("Score error (eval)", "error", evals="eval/rmse eval/mae"),
        _p("Reward margin (eval)", "margin", evals="eval/margin"),
        _STEP_TIME,
    ),
    "dpo": (
        _LOSS,
        _p(
            "Implicit-reward accuracy",
            "accuracy",
            "train/accuracy",
            evals="eval/accuracy",
            smooth=True,
            chance=0.5,
        ),
        _p("Implicit-reward margin", "margin", "train/margin", evals="eval/margin"),
        _p("Log-probs", "nats", "train/logp_chosen train/logp_rejected"),
        _STEP_TIME,
    ),
    "ilql": (
        _LOSS,
        _p("Q and V regression", "loss", "train/q train/v", evals="eval/q eval/v"),
        _p("CQL and behaviour cloning", "nats", "train/cql train/awac", evals="eval/cql eval/awac"),
        _p("V of the first state", "value", "train/v_start", evals="eval/v_start"),
        _STEP_TIME,
    ),
    "ppo": (
        _p("Reward", "reward/mean", "reward/mean", band="reward/std"),
        _p("KL to reference", "kl/mean", "kl/mean", "kl/coef"),
        _p("Losses", "loss/policy", "loss/policy", "loss/value"),
        _p("Entropy", "nats / token", "policy/entropy"),
        _p("Clipping", "fraction", "policy/clip_fraction value/clip_fraction policy/approx_kl"),
        _p("Response length", "tokens", "response/length"),
        _p("Throughput", "tokens / s", "throughput/tokens_per_s", "throughput/samples_per_s"),
        _p("Time per phase", "seconds", PHASES, stack=True, total="time/step"),
    ),
}
# The headline panel of each stage in overview.png: the first of these that has data.
OVERVIEW = {
    "sft": ("Loss",),
    "reward_model": ("Accuracy", "Score error (eval)", "Loss"),
    "ppo": ("Reward",),
    "dpo": ("Implicit-reward accuracy", "Loss"),
    "ilql": ("Loss",),
}


def read_rows(path: Path) -> Rows:
    """Metrics rows; skips blank or malformed lines (a live run's last line may be partial)."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in rows if isinstance(r, dict)]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def series(rows: Rows, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one key sorted by step, skipping rows without it or non-finite values.

    A step logged twice (a resumed run appends to the same file) keeps its latest value.
    """
    by_step = {}
    for row in rows:
        step, value = _finite(row.get("step")), _finite(row.get(key))
        if step is not None and value is not None:
            by_step[step] = value
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _moving_average(ys: list[float]) -> tuple[int, list[float]]:
    """Centred mean over ~10% of the points (3 to 51), so the smooth curve does not lag."""
    half = max(1, min(25, len(ys) // 20))
    cum = list(itertools.accumulate(ys, initial=0.0))
    spans = [(max(0, i - half), min(len(ys), i + half + 1)) for i in range(len(ys))]
    return 2 * half + 1, [(cum[hi] - cum[lo]) / (hi - lo) for lo, hi in spans]


def _draw_stack(ax: Any, panel: Panel, data: dict[str, tuple[list, list]]) -> None:
    """Stacked time per phase, with the measured step total as a dashed line on top."""
    present = [k for k in panel.keys if data[k][0]]
    steps = sorted({s for k in present for s in data[k][0]})
    # A phase missing at a step took no time there (e.g. no weight sync when colocated).
    ys = [[dict(zip(*data[k], strict=True)).get(s, 0.0) for s in steps] for k in present]
    if present:
        ax.stackplot(steps, ys, labels=[k.split("/")[-1] for k in present], alpha=0.75)
    totals = data[panel.total][1] if panel.total else []
    if totals:
        ax.plot(*data[panel.total], "k--", lw=1.2, label=f"{panel.total} (total)")
    top = max([sum(col) for col in zip(*ys, strict=True)] + totals + [0.0])
    ax.set_ylim(0, top * 1.45 or 1)  # headroom so the legend sits above the stack


def _draw_lines(ax: Any, panel: Panel, data: dict, rows: Rows, colors: Iterator[str]) -> None:
    """Left-axis lines (raw + moving average when smoothed; ±std band), then eval points."""
    for key in panel.keys:
        (xs, ys), color = data[key], next(colors)
        if panel.smooth and len(ys) >= 5:
            window, avg = _moving_average(ys)
            ax.plot(xs, ys, color=color, alpha=0.3, lw=0.8)
            ax.plot(xs, avg, color=color, lw=1.6, label=f"{key} (mean of {window})")
        elif xs:
            ax.plot(xs, ys, color=color, lw=1.6, label=key)
        if panel.band and key == panel.keys[0]:
            std = dict(zip(*series(rows, panel.band), strict=True))
            pts = [(x, y, std[x]) for x, y in zip(xs, ys, strict=True) if x in std]
            lo, hi = [y - d for _, y, d in pts], [y + d for _, y, d in pts]
            ax.fill_between([p[0] for p in pts], lo, hi, color=color, alpha=0.2, label="± std")
    for key in panel.evals:
        if data[key][0]:
            ax.plot(*data[key], "o-", color=next(colors), ms=4, lw=0.8, label=key)


def _draw(ax: Any, panel: Panel, rows: Rows) -> None:
    """One panel: its lines or stack, chance line, twin axis, labels and legend."""
    data = {k: series(rows, k) for k in panel.all_keys()}
    colors = iter(f"C{i}" for i in range(10))
    _draw_stack(ax, panel, data) if panel.stack else _draw_lines(ax, panel, data, rows, colors)
    if panel.chance is not None:
        ax.axhline(panel.chance, color="gray", ls="--", lw=1, label=f"chance ({panel.chance:g})")
    ax.set(title=panel.title, xlabel="step", ylabel=panel.ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    twin, top = [k for k in panel.twin if data[k][0]], ax
    if twin:
        top = ax.twinx()  # e.g. the KL coefficient: a different scale from the KL itself
        for key in twin:
            handles += top.plot(*data[key], "--", color=next(colors), lw=1.2, label=key)
        labels += twin
        top.set_ylabel(", ".join(twin))
        # "best" placement only sees one axis's lines: make room above both instead.
        for axis in (ax, top):
            lo, hi = axis.get_ylim()
            axis.set_ylim(lo, hi + 0.3 * (hi - lo))
    loc, ncol = ("upper center", 3) if twin or panel.stack else ("best", 1)
    # On the topmost axis, so no line is drawn over it.
    top.legend(handles, labels, fontsize=7, loc=loc, ncol=ncol, framealpha=0.85)


def _held_out(stage_dir: Path) -> list[tuple[str, float, float]]:
    """(before/after, reward mean, its standard error — or std when that is all there is) from
    eval.json; [] when absent, malformed or empty. The error bar is the uncertainty of the mean,
    the quantity being compared, not the spread of single samples."""
    try:
        evals = json.loads((stage_dir / "eval.json").read_text())
    except (OSError, ValueError):
        return []
    bars = []
    for name in ("before", "after"):
        part = evals.get(name) if isinstance(evals, dict) else None
        mean = _finite(part.get("reward/mean")) if isinstance(part, dict) else None
        if mean is not None:
            spread = _finite(part.get("reward/stderr")) or _finite(part.get("reward/std"))
            bars.append((name, mean, spread or 0.0))
    return bars


def _draw_held_out(ax: Any, bars: list[tuple[str, float, float]]) -> None:
    """Held-out reward before vs after PPO with error bars; the values in the tick labels."""
    ticks = [f"{n}\n{m:.3g}" + (f" ± {s:.2g}" if s else "") for n, m, s in bars]
    means, stds = [b[1] for b in bars], [b[2] for b in bars]
    colors = ["C7" if n == "before" else "C2" for n, _, _ in bars]
    ax.bar(ticks, means, yerr=stds, capsize=4, color=colors, width=0.5)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(title="Held-out reward: before vs after PPO", ylabel="reward/mean")
    ax.grid(alpha=0.3, axis="y")


def _figure(cells: list, title: str, path: Path) -> Path:
    """Lay ``cells`` (callables that draw on an axis) out on a grid and save it as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: training nodes have no display or GUI toolkit
    import matplotlib.pyplot as plt

    # Up to 3 in a row, else the 3 to 5 columns that leave the fewest empty cells.
    n = len(cells)
    ncols = n if n <= 3 else min(range(3, 6), key=lambda c: (-n % c, c))
    nrows = math.ceil(n / ncols)
    # constrained layout (unlike tight_layout) leaves room for twin axes' right-hand labels.
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False, layout="constrained"
    )
    for i, ax in enumerate(axes.flat):
        cells[i](ax) if i < len(cells) else ax.set_visible(False)
    fig.suptitle(title, fontweight="bold")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)  # a long-lived process (a notebook, the trainer) must not accumulate figures
    return path


def find_stages(run_dir: Path) -> dict[str, Path]:
    """Stage name → folder holding its metrics.jsonl (a plain run's top level is "ppo")."""
    stages = {s: run_dir / s for s in STAGES if (run_dir / s / "metrics.jsonl").is_file()}
    if not stages and (run_dir / "metrics.jsonl").is_file():
        stages = {"ppo": run_dir}
    return stages


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write a PNG per stage (and overview.png for pipelines); return the paths written."""
    run_dir = Path(run_dir)
    stages = find_stages(run_dir)
    if not stages:
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir} or its sft/reward_model/ppo/")
    out = run_dir / "plots" if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name, written, headline = run_dir.resolve().name, [], []
    for stage, folder in stages.items():
        rows = read_rows(folder / "metrics.jsonl")
        panels = [p for p in STAGE_PANELS[stage] if any(series(rows, k)[0] for k in p.all_keys())]
        cells = [lambda ax, p=p, r=rows: _draw(ax, p, r) for p in panels]
        bars = _held_out(folder) if stage in ("ppo", "dpo", "ilql") else []
        if bars:
            cells.append(lambda ax, b=bars: _draw_held_out(ax, b))
        if not cells:
            continue  # nothing plottable yet, e.g. a run that has only just started
        steps = max((_finite(r.get("step")) or 0 for r in rows), default=0)
        title = f"{STAGES[stage]}: {name} ({steps:g} steps)"
        written.append(_figure(cells, title, out / f"{stage}.png"))
        best = next((p for t in OVERVIEW[stage] for p in panels if p.title == t), None)
        if best is not None:
            best = replace(best, title=f"{STAGES[stage]}: {best.title}")
            headline.append(lambda ax, p=best, r=rows: _draw(ax, p, r))
    if len(headline) > 1:  # a pipeline with more than one stage to show
        written.append(_figure(headline, f"Pipeline overview: {name}", out / "overview.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    """``rayrlhf plot RUN_DIR [--out DIR]``: print each PNG written; 2 on a missing run/metrics."""
    parser = argparse.ArgumentParser(prog="rayrlhf plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run directory (plain PPO run or pipeline run)")
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="folder for the PNGs; default: RUN_DIR/plots"
    )
    args = parser.parse_args(argv)
    if not Path(args.run_dir).is_dir():
        print(f"rayrlhf plot: no such run directory: {args.run_dir}", file=sys.stderr)
        return 2
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        # --out names a folder of PNGs: a file there is refused, not overwritten or mkdir'd over.
        print(
            f"rayrlhf plot: --out {args.out} is a file; --out takes a folder for the PNGs",
            file=sys.stderr,
        )
        return 2
    try:
        paths = plot_run(args.run_dir, args.out)
    except FileNotFoundError as err:
        print(f"rayrlhf plot: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. --out under a file, or a folder it may not write to
        print(f"rayrlhf plot: cannot write the PNGs to {args.out}: {err}", file=sys.stderr)
        return 2
    if not paths:
        print(f"rayrlhf plot: nothing to plot yet in {args.run_dir}", file=sys.stderr)
    for path in paths:
        print(path)
    return 0
