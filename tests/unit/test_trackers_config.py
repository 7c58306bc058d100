"""run.trackers without a run: the config, the checks before Ray starts, the logger's choice of
outputs, and the pure helpers the trackers log through."""

import socket

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
