"""The run directory: config, metrics as JSONL and TensorBoard, sample generations, console."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from rayrlhf.console import is_terminal

CONSOLE_KEYS = ("reward/mean", "kl/mean", "loss/policy", "loss/value", "throughput/tokens_per_s")
SAMPLE_CHARS = 100  # of the prompt and of the response on the console's sample line


@dataclass(frozen=True)
class LogPosition:
    """How far a run's logs go: rows of ``metrics.jsonl`` and the two files' sizes in bytes."""

    rows: int = 0
    metrics_bytes: int = 0
    samples_bytes: int = 0


class RunLogger:
    """Writes ``config.yaml``, ``metrics.jsonl``, ``samples.jsonl``, TensorBoard events and the
    external trackers of ``run.trackers`` (:mod:`rayrlhf.trackers`).

    Also owns the console: a progress bar over steps and one line of key metrics per step. The
    bar shows only on a terminal; in a redirected log the per-step lines alone tell the progress.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        total_steps: int,
        progress: bool = True,
        console_keys: tuple[str, ...] = CONSOLE_KEYS,
        desc: str = "ppo",
        position: LogPosition | None = None,
    ) -> None:
        """``position``: where the state the run starts from left the logs (a checkpoint's;
        empty for a fresh start). Anything written after it is dropped first.

        ``progress``: show the bar, when stdout and stderr are both terminals: in a file its
        carriage-return redraws pile up into one line of thousands of characters.
        """
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.console_keys, self.desc = console_keys, desc
        position = position or LogPosition()
        show = progress and is_terminal()
        self.bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not show)
        run = config.get("run", {})
        self.tensorboard = "tensorboard" in run.get("trackers", ["tensorboard"])
        self._open(position)
        from rayrlhf.trackers import open_trackers

        self.trackers = open_trackers(run, self.dir, desc, config, resumed=position.rows > 0)

    def _open(self, position: LogPosition) -> None:
        """Cut the files back to ``position``, rebuild TensorBoard from them, open for append."""
        self.rows = position.rows
        for name, size in (
            ("metrics.jsonl", position.metrics_bytes),
            ("samples.jsonl", position.samples_bytes),
        ):
            path = self.dir / name
            if path.exists() and path.stat().st_size > size:
                with path.open("r+b") as f:
                    f.truncate(size)
        self.metrics_file = (self.dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.samples_file = (self.dir / "samples.jsonl").open("a", encoding="utf-8")
        self.tb = None
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # heavy import, only when logging

            # TensorBoard's files cannot be cut at a step, so they are written again from the
            # metrics rows kept: one event per step and tag, none from the dropped steps.
            shutil.rmtree(self.dir / "tensorboard", ignore_errors=True)
            self.tb = SummaryWriter(str(self.dir / "tensorboard"))
        last = 0
        for row in read_metrics(self.dir) if position.rows else []:
            last = int(row["step"])
            self._add_scalars(last, row)
        self.bar.n = last
        self.bar.refresh()

    def position(self) -> LogPosition:
        """Where the logs stand now (what a checkpoint records)."""
        self.metrics_file.flush()
        self.samples_file.flush()
        return LogPosition(self.rows, self.metrics_file.tell(), self.samples_file.tell())

    def rewind(self, position: LogPosition) -> None:
        """Drop every row written after ``position`` (a run rolled back to a checkpoint). The
        external trackers keep theirs: the steps trained again are the same steps, and each
        tracker logs a step once."""
        if self.tb is not None:
            self.tb.close()
        self.metrics_file.close()
        self.samples_file.close()
        self._open(position)

    def _add_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        if self.tb is None:
            return
        for key, value in scalars.items():
            if key not in ("step", "time") and isinstance(value, int | float):
                if math.isfinite(value):
                    self.tb.add_scalar(key, value, step)

    def log(
        self,
        step: int,
        metrics: dict[str, Any],
        samples: list[dict] | None = None,
        advance: bool = True,
    ) -> None:
        """Record one step's scalar metrics and samples; ``advance`` moves the progress bar."""
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        self.metrics_file.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
        self.metrics_file.flush()
        self.rows += 1
        self._add_scalars(step, scalars)
        for sample in samples or []:
            self.samples_file.write(json.dumps({"step": step, **sample}) + "\n")
        self.samples_file.flush()
        for tracker in self.trackers:
            tracker.log(step, scalars, samples or [])
        line = "  ".join(f"{k}={scalars[k]:.4g}" for k in self.console_keys if k in scalars)
        self.bar.write(f"{self.desc} step {step}: {line}")
        for sample in (samples or [])[:1]:
            # Clipped: the console line is a glimpse; samples.jsonl holds the whole text.
            self.bar.write(
                f"  sample {sample['sample_id']}: {_clip(sample['prompt'])} → "
                f"{_clip(sample['response'])} (reward {sample['reward']:.3f})"
            )
        self.bar.set_postfix(
            {k: f"{scalars[k]:.3g}" for k in self.console_keys[:2] if k in scalars}
        )
        if advance:
            self.bar.update(1)

    def close(self, ok: bool = True) -> None:
        """Flush and close every output; ``ok``: the loop ended normally (the trackers mark
        their runs finished, else killed: a resume continues them)."""
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.metrics_file.close()
        self.samples_file.close()
        for tracker in self.trackers:
            tracker.close(ok)


def _clip(text: str, width: int = SAMPLE_CHARS) -> str:
    """``repr`` of ``text`` cut to ``width`` characters (with "…"), kept on one line."""
    shown = repr(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics rows of a run directory, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# What legitimately differs between two runs of one config: wall-clock times, throughput and
# utilisation, the faults a run survived, and the worker count it ran with (none of which
# changes the training).
RUN_DEPENDENT = ("time", "time/", "throughput/", "perf/", "faults/", "rollout/workers")


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metrics rows without :data:`RUN_DEPENDENT` keys: equal rows ⇔ the same training."""
    return [{k: v for k, v in r.items() if not k.startswith(RUN_DEPENDENT)} for r in rows]
