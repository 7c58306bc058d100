"""MLflow: the only module that imports ``mlflow``.

A stage is one MLflow run in ``run.mlflow.experiment``: metrics per step (``log_batch``), the
config as parameters, the sampled generations as one table artifact (``generations.json``,
appended per step by ``log_table``), and the closing report and plots as artifacts.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

# MLflow prints a progress bar per artifact call (one a step for the table) and the run's URL
# at every status change: the run's log gets one line at the start instead.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from rayrlhf.trackers import Tracker, flat_params

PARAMS_PER_CALL = 100  # MLflow's log_batch limit
MAX_PARAM_CHARS = 6000


def client_of(settings: dict[str, Any]) -> MlflowClient:
    """A client of ``run.mlflow.tracking_uri`` (empty: MLflow's own default, the
    MLFLOW_TRACKING_URI environment variable or ./mlruns)."""
    return MlflowClient(tracking_uri=settings.get("tracking_uri") or None)


class MlflowTracker(Tracker):
    """One stage as an MLflow run, continued by id after a resume."""

    name = "mlflow"

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
        self.client = client_of(settings)
        if run_id is not None:
            self._id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(settings["experiment"])
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(settings["experiment"])
        )
        run = self.client.create_run(
            experiment_id, run_name=title, tags={"rayrlhf.run_dir": str(run_dir)}
        )
        self._id = run.info.run_id
        print(f"[rayrlhf] mlflow: run {title} ({self._id}) at {self.client.tracking_uri}")
        params = [Param(k, v[:MAX_PARAM_CHARS]) for k, v in flat_params(tree).items()]
        for i in range(0, len(params), PARAMS_PER_CALL):
            self.client.log_batch(self._id, params=params[i : i + PARAMS_PER_CALL])

    @property
    def run_id(self) -> str:
        return self._id

    def _log(self, step: int, scalars: dict[str, float], rows: list[dict[str, Any]]) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), 1000):  # log_batch takes up to 1000 metrics
            self.client.log_batch(self._id, metrics=metrics[i : i + 1000])
        if rows:
            columns = {key: [row[key] for row in rows] for key in rows[0]}
            with warnings.catch_warnings():  # pandas' deprecation notes from inside log_table
                warnings.simplefilter("ignore")
                self.client.log_table(self._id, data=columns, artifact_file="generations.json")

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            folder = "plots" if path.suffix == ".png" else None
            self.client.log_artifact(self._id, str(path), artifact_path=folder)

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self._id, status="FINISHED" if ok else "KILLED")


def mark_killed(settings: dict[str, Any], run_id: str) -> None:
    """End an earlier run of the same folder that a fresh start replaces."""
    client = client_of(settings)
    try:
        client.set_terminated(run_id, status="KILLED")
    except Exception:  # deleted meanwhile, or another server: nothing to close
        pass
