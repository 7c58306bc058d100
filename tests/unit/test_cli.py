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
