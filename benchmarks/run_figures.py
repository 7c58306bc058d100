"""What the survival benchmarks (chaos.py, node_loss.py) measure of a run: one trainer run to
its end, and the sample figures that say whether every sample was trained exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rayrlhf.buffer import SampleState
from rayrlhf.config import load
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.metrics import comparable, read_metrics
from rayrlhf.tiny_models import save_tiny

PROMPTS = ["the movie was very", "a film is", "the plot", "this story was"]


def tiny_folder(folder: Path) -> None:
    """A tiny model (``folder/model``) and four prompts (``folder/prompts.jsonl``)."""
    save_tiny(folder / "model")
    rows = "".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS)
    (folder / "prompts.jsonl").write_text(rows)


def run_trainer(overrides: list[str], patch: Callable[[OnlineTrainer], Any] | None = None) -> dict:
    """Run a config to its end (after ``patch(trainer)``): seconds, state digests, metrics rows,
    samples trained and the sample ids of the ledger."""
    trainer = OnlineTrainer(load(None, overrides))
    start = time.monotonic()
    try:
        if patch is not None:
            patch(trainer)
        trainer.run()
        ledger = trainer.buffer.ledger
        return {
            "seconds": round(time.monotonic() - start, 1),
            "digests": trainer.learners.state_digests(),
            "rows": read_metrics(trainer.run_dir),
            "trained": sum(1 for s in ledger.values() if s is SampleState.TRAINED),
            "ids": set(ledger),
        }
    finally:
        trainer.shutdown()


def sample_figures(run: dict, clean: dict, steps: int, per_step: int) -> dict[str, Any]:
    """Samples trained, lost (ids of the run's steps never trained) and duplicated (trained by
    the learners minus distinct ids), and whether parameters, optimizer state and metrics equal
    the clean run's."""
    expected = {f"{s}-{i}" for s in range(steps) for i in range(per_step)}
    return {
        "samples_trained": run["trained"],
        "samples_lost": len(expected - run["ids"]),
        "samples_duplicated": int(sum(r["samples"] for r in run["rows"])) - run["trained"],
        "params_equal_clean_run": run["digests"] == clean["digests"],
        "metrics_equal_clean_run": comparable(run["rows"]) == comparable(clean["rows"]),
    }
