"""External experiment trackers (``run.trackers``: mlflow, wandb) beside the run directory's own
metrics.jsonl and TensorBoard files.

Each tracker logs a stage's metrics per step, its config as parameters, a table of sampled
generations (prompt, response, reward, step, policy version) and, at the end, the closing
report and plots. A tracker run belongs to a run directory: its id is kept in
``RUN_DIR/trackers.json`` with the last step it logged, so a run resumed from a checkpoint
continues the same MLflow run or W&B run, and the steps it trains again after the checkpoint
(identical by the run's determinism) are not logged twice. A run that starts from no
checkpoint starts a new tracker run (an earlier one of the same folder is closed as killed).

The packages are optional (``pip install 'rayrlhf[trackers]'``); each is imported only in its
own module, and only when named.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

STATE = "trackers.json"
EXTERNAL = ("mlflow", "wandb")  # the trackers this package drives (the run logger does the rest)
TABLE_COLUMNS = ("step", "policy_version", "sample_id", "prompt", "response", "reward")


class Tracker:
    """One external tracker's run for one run directory; subclasses talk to the service.

    ``logged`` is the last step this tracker run holds: :meth:`log` skips a step at or below
    it (the same step trained again after a resume).
    """

    name = ""

    def __init__(self, run_dir: Path, logged: int) -> None:
        self.run_dir, self.logged = run_dir, logged

    @property
    def run_id(self) -> str:
        """The tracker's id of this run (kept in trackers.json)."""
        raise NotImplementedError

    def log(self, step: int, scalars: dict[str, float], samples: list[dict[str, Any]]) -> None:
        """One step's finite scalars and sample rows, unless this run already holds the step."""
        if step <= self.logged:
            return
        finite = {k: v for k, v in scalars.items() if math.isfinite(v)}
        self._log(step, finite, [table_row(step, s) for s in samples])
        self.logged = step
        save_state(self.run_dir, self.name, self.run_id, step)

    def _log(self, step: int, scalars: dict[str, float], rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def log_files(self, paths: list[Path]) -> None:
        """Upload files (the closing report, plots) as the run's artifacts."""
        raise NotImplementedError

    def close(self, ok: bool) -> None:
        """End the tracker run (finished, or failed/stopped when ``ok`` is false)."""
        raise NotImplementedError


def table_row(step: int, sample: dict[str, Any]) -> dict[str, Any]:
    """A sample as a generations-table row: :data:`TABLE_COLUMNS`, in that order."""
    version = sample.get("policy_version", step - 1)  # on-policy: generated before the update
    row = {"step": step, "policy_version": int(version)}
    for key in TABLE_COLUMNS[2:]:
        row[key] = sample.get(key)
    row["reward"] = float(row["reward"]) if row["reward"] is not None else float("nan")
    return row


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys → strings (what trackers take as parameters)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def load_state(run_dir: Path) -> dict[str, dict[str, Any]]:
    """trackers.json: {tracker: {"run_id", "logged"}} (empty when absent)."""
    path = run_dir / STATE
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(run_dir: Path, name: str, run_id: str, logged: int) -> None:
    """Record a tracker's run id and last logged step (a small file rewritten atomically)."""
    state = load_state(run_dir)
    state[name] = {"run_id": run_id, "logged": logged}
    tmp = run_dir / f".{STATE}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(run_dir / STATE)


def open_trackers(
    run: dict[str, Any],
    run_dir: Path,
    stage: str,
    tree: dict[str, Any],
    resumed: bool,
    names: list[str] | None = None,
) -> list[Tracker]:
    """The external trackers ``run["trackers"]`` (or ``names``) names, each continuing this
    folder's tracker run when ``resumed`` (the logs start from a checkpoint), else starting a
    new one.

    ``run``: the config's run section as a dict; ``tree``: the config logged as parameters.
    """
    state = load_state(run_dir)
    trackers: list[Tracker] = []
    for name in run.get("trackers", []) if names is None else names:
        if name not in EXTERNAL:
            continue
        earlier = state.get(name)
        if earlier is not None and not resumed:
            close_stale(name, run, run_dir, earlier["run_id"])
            earlier = None
        run_id, logged = (earlier["run_id"], int(earlier["logged"])) if earlier else (None, -1)
        title = f"{run['name']}/{stage}"
        if name == "mlflow":
            from rayrlhf.trackers.mlflow_tracker import MlflowTracker

            tracker: Tracker = MlflowTracker(run["mlflow"], run_dir, title, tree, run_id, logged)
        else:
            from rayrlhf.trackers.wandb_tracker import WandbTracker

            tracker = WandbTracker(run["wandb"], run_dir, title, tree, run_id, logged)
        save_state(run_dir, name, tracker.run_id, tracker.logged)
        trackers.append(tracker)
    return trackers


def close_stale(name: str, run: dict[str, Any], run_dir: Path, run_id: str) -> None:
    """An earlier tracker run of this folder that a fresh start replaces: marked killed."""
    if name == "mlflow":
        from rayrlhf.trackers.mlflow_tracker import mark_killed

        mark_killed(run["mlflow"], run_id)
    # W&B: an offline run needs nothing; an online one ended when its process did.


def log_closing_files(run: dict[str, Any], run_dir: Path, stage: str, paths: list[Path]) -> None:
    """Add the closing report and plots to the tracker runs a stage's folder recorded (those
    of ``run.trackers`` only), then end them again as finished."""
    names = [n for n in load_state(run_dir) if n in run.get("trackers", [])]
    for tracker in open_trackers(run, run_dir, stage, {}, resumed=True, names=names):
        tracker.log_files([p for p in paths if p.exists()])
        tracker.close(ok=True)
