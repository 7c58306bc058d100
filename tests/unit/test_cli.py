"""The CLI: bad config stops it before Ray starts, naming the field; --help, --version and
`scale` without a live Ray answer in plain lines."""

from __future__ import annotations

import pytest

from rayrlhf.cli import main


def test_bad_override_exits_2_naming_the_field(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {policy: /m}\ndata: {prompts: /p}\nreward: {function: 'a:b'}\n")
    assert main(["train", str(cfg), "--set", "rollout.num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert "rollout.num_workers" in err and "greater than or equal to 1" in err


def test_missing_model_folder_exits_2(capsys, tmp_path, prompts_file):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: {{policy: {tmp_path}/absent}}\ndata: {{prompts: {prompts_file}}}\n"
        "reward: {function: 'a:b'}\n"
    )
    assert main(["train", str(cfg)]) == 2
    assert "model.policy: no such file or folder" in capsys.readouterr().err


def test_train_refuses_a_pipeline_config(capsys, tiny_model, prompts_file, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: {{policy: {tiny_model}}}\ndata: {{prompts: {prompts_file}}}\n"
        f"reward_model: {{model: {tiny_model}, data: {{path: {prompts_file}}}}}\n"
    )
    assert main(["train", str(cfg)]) == 2
    assert "run it with `rayrlhf pipeline`" in capsys.readouterr().err


def test_plot_and_argilla_are_routed(capsys, tmp_path):
    assert main(["plot", str(tmp_path / "absent")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    export = tmp_path / "export.jsonl"
    export.write_text(
        '{"prompt": "p", "response-1": "a", "response-2": "b", "response_ranking": 3}\n'
    )
    assert main(["argilla", str(export), "--out", str(tmp_path / "out")]) == 0
    pairs = (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()
    assert len(pairs) == 1 and '"tie": true' in pairs[0]


def _help(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to the terminal's width
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_keeps_the_command_table(capsys, monkeypatch):
    lines = _help(capsys, monkeypatch).splitlines()
    for command in ("pipeline CONFIG", "train CONFIG", "plot RUN_DIR", "scale RUN_NAME"):
        assert any(line.strip().startswith(f"rayrlhf {command}") for line in lines), command


def test_train_help_names_every_online_algorithm(capsys, monkeypatch):
    for text in (_help(capsys, monkeypatch), _help(capsys, monkeypatch, "train")):
        flat = " ".join(text.split())
        assert "PPO only" not in flat
        for name in ("PPO", "GRPO", "Dr. GRPO", "DAPO", "RLOO", "REINFORCE++"):
            assert name in flat, name


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"rayrlhf {version('rayrlhf')}\n"


@pytest.fixture
def no_ray(monkeypatch, tmp_path):
    """Ray as it answers with nothing running; records the addresses it was asked for."""
    import ray

    asked: list[str] = []

    def init(address: str | None = None, **_: object) -> None:
        asked.append(address)
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ray/auth_token
    return asked


def test_scale_without_ray_says_so_in_one_line(capsys, tmp_path, no_ray):
    argv = ["scale", "absent-run", "--rollout-workers", "2", "--output-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no Ray running on this machine" in err and "'absent-run'" in err
    assert no_ray == ["auto"]


@pytest.mark.parametrize("folder", ["", "ppo"])  # `train` writes it; a pipeline's online stage
def test_scale_reads_the_ray_address_the_run_recorded(capsys, tmp_path, no_ray, folder):
    recorded = tmp_path / "my-run" / folder / "ray_address"
    recorded.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text("10.0.0.7:6379\n")
    argv = ["scale", "my-run", "--rollout-workers", "2", "--output-dir", str(tmp_path)]
    assert main(argv) == 1
    assert no_ray == ["10.0.0.7:6379"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"at 10.0.0.7:6379 (from {recorded})" in err
