"""Logs that read well anywhere: a redirected console holds plain short lines, the closing
summary names what ran and where its model is, and data errors advise keys that exist."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from rayrlhf.config import Config, TableConfig
from rayrlhf.console import is_terminal, plain_when_redirected
from rayrlhf.data.prompts import load_prompts
from rayrlhf.data.tables import DataError, load_rows
from rayrlhf.loops.summary import format_summary
from rayrlhf.metrics import RunLogger


class _Terminal(io.StringIO):
    """A console stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _log_steps(run_dir: Path, steps: int = 3) -> RunLogger:
    logger = RunLogger(run_dir, {}, steps, progress=True, desc="grpo")
    for step in range(1, steps + 1):
        sample = {"sample_id": f"{step}-0", "prompt": "p " * 400, "response": "r", "reward": 0.5}
        logger.log(step, {"reward/mean": 0.1 * step, "kl/mean": 0.01}, [sample])
    return logger


def test_redirected_console_gets_plain_short_step_lines(tmp_path, capsys):
    # pytest's captured stdout/stderr are not terminals, as a `> run.log 2>&1` file is not.
    _log_steps(tmp_path).close()
    captured = capsys.readouterr()
    everything = captured.out + captured.err
    assert "\r" not in everything and "\x1b[" not in everything  # no bar redraws, no colours
    lines = captured.out.splitlines()
    assert [line for line in lines if " step " in line] == [
        f"grpo step {s}: reward/mean={0.1 * s:.4g}  kl/mean=0.01" for s in (1, 2, 3)
    ]
    assert all(len(line) < 300 for line in lines)  # the 800-character prompt is clipped
    assert json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])["prompt"] == (
        "p " * 400
    )  # the file keeps the whole text


def test_progress_bar_shows_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdout", _Terminal())
    monkeypatch.setattr("sys.stderr", _Terminal())
    logger = _log_steps(tmp_path)
    assert not logger.bar.disable and logger.bar.n == 3
    logger.close()


def test_console_counts_as_terminal_only_when_it_is(monkeypatch):
    assert is_terminal(_Terminal(), _Terminal())
    assert not is_terminal(_Terminal(), io.StringIO())
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    plain_when_redirected()  # Ray's actor log prefixes: no colour codes into a file
    import os

    assert os.environ["RAY_COLOR_PREFIX"] == "0"


def _online(algorithm: str) -> dict:
    return {
        "steps": 4,
        "algorithm": algorithm,
        "train/reward_first": 0.1,
        "train/reward_last": 0.4,
        "train/kl_last": 0.02,
    }


def test_train_summary_is_headed_for_the_algorithm_and_says_where_the_model_is(tmp_path):
    text = format_summary({"ppo": _online("grpo")}, tmp_path, pipeline=False)
    assert text.splitlines()[0] == f"=== GRPO run: {tmp_path} ==="
    assert "RLHF pipeline" not in text
    assert f"GRPO policy saved in {tmp_path / 'model'}" in text
    other = format_summary({"ppo": _online("reinforce_pp")}, tmp_path, pipeline=False)
    assert other.splitlines()[0] == f"=== REINFORCE++ run: {tmp_path} ==="


def test_pipeline_summary_names_its_stages_and_the_third_stage_model(tmp_path):
    sft = {"eval/loss": 1.0, "steps": 2, "train_items": 8}
    rm = {"eval/accuracy": 0.7, "eval/examples": 10, "steps": 3}
    text = format_summary({"sft": sft, "reward_model": rm, "ppo": _online("dr_grpo")}, tmp_path)
    assert text.splitlines()[0] == (
        f"=== RLHF pipeline (SFT → reward model → Dr. GRPO): {tmp_path} ==="
    )
    assert f"Dr. GRPO policy saved in {tmp_path / 'ppo' / 'model'}" in text
    dpo = {"eval/accuracy": 0.6, "steps": 5}
    text = format_summary({"sft": sft, "dpo": dpo}, tmp_path)
    assert f"DPO policy saved in {tmp_path / 'dpo' / 'model'}" in text


def _keys_named(message: str) -> list[str]:
    """Every ``key:`` the message tells a user to set (``set data.prompt_key: ...``)."""
    return re.findall(r"(?:set|with) ([a-z_.]+):", message)


def _is_config_key(dotted: str, model: type = Config) -> bool:
    for part in dotted.split("."):
        if part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def test_prompts_format_hint_names_keys_that_exist(tmp_path):
    text_file = tmp_path / "prompts.txt"
    text_file.write_text('{"prompt": "hi"}\n')
    with pytest.raises(DataError) as err:
        load_prompts(text_file, "prompt", 0.1)
    # data.prompts is a bare path: there is no data.format to set, only the file's name.
    assert "set format" not in str(err.value) and ".jsonl" in str(err.value)
    assert str(err.value).startswith("data.prompts:") and _is_config_key("data.prompts")
    csv_file = tmp_path / "prompts.csv"
    csv_file.write_text("text\nhello\n")
    with pytest.raises(DataError) as err:
        load_prompts(csv_file, "prompt", 0.1)
    keys = _keys_named(str(err.value))
    assert keys == ["data.prompt_key"] and all(_is_config_key(k) for k in keys)


def test_table_section_hints_name_its_own_keys(tmp_path):
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("question,answer\nq,a\n")
    with pytest.raises(DataError) as err:
        load_rows(TableConfig(path=str(csv_file)), "sft")
    assert _keys_named(str(err.value)) == ["columns"]
    assert "columns" in TableConfig.model_fields and "prompt" in str(err.value)
