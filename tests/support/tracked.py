"""What the tracker tests read back: an MLflow run's metric history, the runs' ids."""

from __future__ import annotations

from pathlib import Path

from wandb_files import history as wandb_history

from rayrlhf.trackers import load_state

TRACKED = ("run.trackers=[jsonl,mlflow,wandb]", "run.mlflow.experiment=tests")


def tracked(uri: str) -> tuple[str, ...]:
    """Overrides that log a run to the MLflow server at ``uri`` and to W&B offline files."""
    return (*TRACKED, f"run.mlflow.tracking_uri={uri}")


def logged_steps(uri: str, run_dir: Path, rows: list[dict]) -> dict[str, list[int]]:
    """Steps each tracker holds: every metric of ``rows`` in MLflow (key → steps) and W&B's
    history steps (key "wandb")."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = load_state(run_dir)["mlflow"]["run_id"]
    keys = {k for r in rows for k in r if k not in ("step", "time")}
    steps = {k: [m.step for m in client.get_metric_history(run_id, k)] for k in keys}
    steps["wandb"] = [r["_step"] for r in wandb_history(run_dir)]
    return steps


def assert_each_step_once(uri: str, run_dir: Path, rows: list[dict]) -> None:
    """Every metric of every row, and W&B's history, logged exactly once per step."""
    for key, steps in logged_steps(uri, run_dir, rows).items():
        expected = [r["step"] for r in rows if key == "wandb" or isinstance(r.get(key), float)]
        assert steps == expected, key
