"""Weights & Biases: the only module that imports ``wandb``.

A stage is one W&B run (``run.wandb.mode``: offline by default, its files under
``RUN_DIR/wandb``; ``wandb sync`` uploads them later), resumed by id. Metrics are logged at the
run's step, the sampled generations as a table per step (``generations``), the closing report
and plots saved into the run's files.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

import wandb

from rayrlhf.trackers import TABLE_COLUMNS, Tracker, flat_params


class WandbTracker(Tracker):
    """One stage as a W&B run, continued by id (``resume="allow"``) after a resume."""

    name = "wandb"

    def __init__(
        self,
        settings: dict[str, Any],
        run_dir: Path,
        title: str,
        tree: dict[str, Any],
        run_id: str | None,
        logged: int,
    ) -> None:
        super().__init__(run_dir, logged)
        self.run = wandb.init(
            project=settings["project"],
            entity=settings.get("entity") or None,
            name=title,
            id=run_id or secrets.token_hex(4),
            resume="allow",
            dir=str(run_dir),
            mode=settings["mode"],
            config=flat_params(tree) if run_id is None else None,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
            reinit="create_new",
        )

    @property
    def run_id(self) -> str:
        return self.run.id

    def _log(self, step: int, scalars: dict[str, float], rows: list[dict[str, Any]]) -> None:
        data: dict[str, Any] = dict(scalars)
        if rows:
            data["generations"] = wandb.Table(
                columns=list(TABLE_COLUMNS), data=[[r[c] for c in TABLE_COLUMNS] for r in rows]
            )
        self.run.log(data, step=step)

    def log_files(self, paths: list[Path]) -> None:
        # Copied into the run's files folder, which `wandb sync` uploads (run.save would link).
        for path in paths:
            shutil.copy2(path, Path(self.run.dir) / path.name)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)
