"""run.trackers without a run: the config, the checks before Ray starts, the logger's choice of
outputs, and the pure helpers the trackers log through."""

import json
import socket
from pathlib import Path

import pytest

from rayrlhf.config import ConfigError, load
from rayrlhf.metrics import RunLogger
from rayrlhf.preflight import check_trackers
from rayrlhf.trackers import flat_params, table_row


def test_trackers_config_is_checked():
    config = load(
        None,
        ["model.policy=x", "data.prompts=p", "reward.function=a:b", "run.trackers=[jsonl,mlflow]"],
    )
    assert config.run.trackers == ["jsonl", "mlflow"] and config.run.wandb.mode == "offline"
    with pytest.raises(ConfigError, match="run.trackers"):
        load(
            None,
            [
                "model.policy=x",
                "data.prompts=p",
                "reward.function=a:b",
                "run.trackers=[jsonl,comet]",
            ],
        )


def test_an_mlflow_server_that_does_not_answer_is_refused_before_ray():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match="no MLflow server answers at http://127.0.0.1"):
        check_trackers(["mlflow"], f"http://127.0.0.1:{port}")
    check_trackers(["mlflow"], "file:///tmp/mlruns")  # a local store needs no server
    check_trackers(["jsonl"], f"http://127.0.0.1:{port}")  # not used: not checked


def test_missing_tracker_package_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "wandb" else real(n))
    with pytest.raises(ConfigError, match="run.trackers names wandb, which is not installed"):
        check_trackers(["jsonl", "wandb"], "")


def test_tensorboard_is_written_only_when_named(tmp_path):
    quiet = RunLogger(tmp_path / "a", {"run": {"trackers": ["jsonl"]}}, 2, progress=False)
    quiet.log(1, {"x": 1.0})
    quiet.close()
    loud = RunLogger(tmp_path / "b", {"run": {"trackers": ["jsonl", "tensorboard"]}}, 2, False)
    loud.log(1, {"x": 1.0})
    loud.close()
    assert not (tmp_path / "a" / "tensorboard").exists()
    assert list((tmp_path / "b" / "tensorboard").iterdir())
    assert (tmp_path / "a" / "metrics.jsonl").read_text().count("\n") == 1


def test_flat_params_and_table_rows():
    tree = {"run": {"name": "r", "trackers": ["jsonl"]}, "model": {"lora": None, "x": {}}}
    assert flat_params(tree) == {
        "run.name": "r", "run.trackers": '["jsonl"]', "model.lora": "null", "model.x": "{}",
    }  # fmt: skip
    row = table_row(3, {"sample_id": "2-0", "prompt": "p", "response": "r", "reward": 1})
    assert row == {"step": 3, "policy_version": 2, "sample_id": "2-0", "prompt": "p",
                   "response": "r", "reward": 1.0}  # fmt: skip
    assert table_row(3, {"reward": 0.5, "policy_version": 1})["policy_version"] == 1


def test_tracker_runs_hold_each_step_once_the_table_and_the_closing_files(tmp_path, monkeypatch):
    """The trackers alone (a SQLite MLflow store, W&B offline files): a run stopped after step
    3, resumed from a step-2 checkpoint (so step 3 comes again), then closed with its report."""
    from mlflow.tracking import MlflowClient
    from wandb_files import history

    from rayrlhf.trackers import load_state, log_closing_files, open_trackers

    monkeypatch.chdir(tmp_path)  # a SQLite store keeps its artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = {
        "name": "r",
        "trackers": ["jsonl", "mlflow", "wandb"],
        "mlflow": {"tracking_uri": uri, "experiment": "unit"},
        "wandb": {"project": "unit", "entity": None, "mode": "offline"},
    }
    tree = {"run": run, "learner": {"policy_lr": 0.001}}
    out = tmp_path / "run"
    out.mkdir()

    def sample(step: int) -> dict:
        return {"sample_id": f"{step - 1}-0", "prompt": "p", "response": f"r{step}", "reward": 1}

    for steps, resumed in (((1, 2, 3), False), ((3, 4), True)):
        trackers = open_trackers(run, out, "ppo", tree, resumed=resumed)
        for step in steps:
            for t in trackers:
                t.log(step, {"reward/mean": step / 10, "kl": float("nan")}, [sample(step)])
        for t in trackers:
            t.close(ok=resumed)
    (out / "report.txt").write_text("closing report\n")
    log_closing_files(run, out, "ppo", [out / "report.txt", out / "missing.png"])

    client = MlflowClient(uri)
    run_id = load_state(out)["mlflow"]["run_id"]
    points = client.get_metric_history(run_id, "reward/mean")
    assert [(p.step, p.value) for p in points] == [(s, s / 10) for s in (1, 2, 3, 4)]
    assert client.get_metric_history(run_id, "kl") == []  # non-finite values are not logged
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED" and found.data.params["learner.policy_lr"] == "0.001"
    table = json.loads(Path(client.download_artifacts(run_id, "generations.json", str(tmp_path)))
                       .read_text())  # fmt: skip
    assert [row[4] for row in table["data"]] == ["r1", "r2", "r3", "r4"]
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "generations.json", "report.txt",
    ]  # fmt: skip
    assert [r["_step"] for r in history(out)] == [1, 2, 3, 4]
    assert list(out.glob("wandb/offline-run-*/files/report.txt"))
    # A fresh start of the same folder (no checkpoint) is a new MLflow run; the old one killed.
    open_trackers(run, out, "ppo", tree, resumed=False)[0].close(ok=True)
    assert load_state(out)["mlflow"]["run_id"] != run_id
    assert client.get_run(run_id).info.status == "KILLED"
