"""run.trackers: a tiny run logged to a real MLflow server (started here on loopback) and to
W&B's offline files, stopped after a step past its checkpoint and resumed, then read back:
one value per step per metric, the config as parameters, the generations table, the closing
files; and a learner restart (rolled back to a checkpoint) logs no step twice either."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from trained import on_dispatch, pid_of, train
from wandb_files import config as wandb_config
from wandb_files import history as wandb_history

from rayrlhf.config import load
from rayrlhf.metrics import read_metrics
from rayrlhf.trackers import load_state, log_closing_files

pytestmark = pytest.mark.integration

STEPS, SAMPLES = 4, 2


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free loopback port with a SQLite store; its tracking URI."""
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=(root / "server.log").open("w"),
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError((root / "server.log").read_text()[-2000:]) from None
            time.sleep(0.5)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(30)


def overrides(tiny_model, prompts_file, root, uri, name, *extra):
    return [
        f"model.policy={tiny_model}",
        f"data.prompts={prompts_file}",
        "reward.function=rayrlhf.rewards.rules:target_word_frequency",
        f"run.output_dir={root}",
        f"run.name={name}",
        "run.progress_bar=false",
        f"run.num_steps={STEPS}",
        "run.checkpoint_every=2",
        f"run.log_samples={SAMPLES}",
        "run.trackers=[jsonl,mlflow,wandb]",
        f"run.mlflow.tracking_uri={uri}",
        "run.mlflow.experiment=tests",
        "rollout.prompts_per_step=4",
        "rollout.chunk_size=2",
        "rollout.max_new_tokens=8",
        "learner.minibatch_size=4",
        "learner.micro_batch_size=4",
        "learner.policy_lr=1e-3",
        "learner.value_lr=1e-3",
        *extra,
    ]


def mlflow_history(uri: str, run_id: str, rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    keys = {k for r in rows for k in r if k not in ("step", "time")}
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}


def test_stop_and_resume_log_each_step_once(ray_local, tiny_model, prompts_file, tmp_path,
                                            mlflow_server):  # fmt: skip
    from mlflow.tracking import MlflowClient

    args = overrides(tiny_model, prompts_file, tmp_path, mlflow_server, "tracked")
    first = train(load(None, args), steps=3)  # checkpoint at step 2, step 3 logged past it
    run_dir = tmp_path / "tracked"
    state = load_state(run_dir)
    assert state["mlflow"]["logged"] == 3 and state["wandb"]["logged"] == 3
    second = train(load(None, args))  # resumes at step 2: step 3 is trained again
    rows = second["rows"]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert load_state(run_dir)["mlflow"]["run_id"] == state["mlflow"]["run_id"]  # same run
    assert first["rows"][:3] != [] and len(first["rows"]) == 3

    # MLflow, read back through its client: one value per step per metric, the jsonl's values.
    run_id = state["mlflow"]["run_id"]
    history = mlflow_history(mlflow_server, run_id, rows)
    for key, points in history.items():
        logged = [r for r in rows if isinstance(r.get(key), float)]
        assert [s for s, _ in points] == [r["step"] for r in logged], key
    client = MlflowClient(mlflow_server)
    assert [v for _, v in history["reward/mean"]] == pytest.approx(
        [r["reward/mean"] for r in rows], rel=1e-6
    )
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked/ppo"
    assert run.data.params["learner.policy_lr"] == "0.001"
    table = json.loads(Path(client.download_artifacts(run_id, "generations.json", str(tmp_path)))
                       .read_text())  # fmt: skip
    assert table["columns"] == ["step", "policy_version", "sample_id", "prompt", "response",
                                "reward"]  # fmt: skip
    assert [r[0] for r in table["data"]] == [s for s in range(1, STEPS + 1) for _ in range(SAMPLES)]
    assert all(r[1] == r[0] - 1 for r in table["data"])  # on-policy: the version before the step
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [r[4] for r in table["data"]] == [s["response"] for s in samples]

    # W&B offline files: the resumed run's history continues without a repeated step.
    wandb_rows = wandb_history(run_dir)
    assert [r["_step"] for r in wandb_rows] == list(range(1, STEPS + 1))
    assert [r["reward/mean"] for r in wandb_rows] == pytest.approx(
        [r["reward/mean"] for r in rows], rel=1e-6
    )
    assert all(r["generations/nrows"] == SAMPLES for r in wandb_rows)
    assert wandb_config(run_dir)["learner.policy_lr"] == "0.001"

    # The closing report and plots, as the CLI adds them at the end.
    report = run_dir / "report.txt"
    report.write_text("closing report\n")
    log_closing_files(load(None, args).run.model_dump(mode="json"), run_dir, "ppo", [report])
    assert "report.txt" in [a.path for a in client.list_artifacts(run_id)]
    assert list(run_dir.glob("wandb/offline-run-*/files/report.txt"))


def test_a_learner_restart_logs_no_step_twice(ray_local, tiny_model, prompts_file, tmp_path,
                                              mlflow_server):  # fmt: skip
    trainers = []

    def kill_learner(flight):  # mid-step 4: step 3 is logged, the checkpoint is step 2's
        os.kill(pid_of(trainers[0].learners.actors[0]), signal.SIGKILL)

    def patch(trainer):
        trainers.append(trainer)
        on_dispatch(trainer, {7: kill_learner})

    args = overrides(tiny_model, prompts_file, tmp_path, mlflow_server, "restarted")
    run = train(load(None, args), patch=patch)
    assert run["rows"][-1]["faults/learner_restarts"] == 1
    run_id = load_state(tmp_path / "restarted")["mlflow"]["run_id"]
    steps = [s for s, _ in mlflow_history(mlflow_server, run_id, run["rows"])["reward/mean"]]
    assert steps == list(range(1, STEPS + 1))
    assert [r["_step"] for r in wandb_history(tmp_path / "restarted")] == steps
    assert read_metrics(tmp_path / "restarted")[-1]["step"] == STEPS
