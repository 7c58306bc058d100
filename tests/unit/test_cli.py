"""The CLI stops on bad config before starting Ray, naming the field."""

from __future__ import annotations

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
