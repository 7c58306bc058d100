"""What a pipeline stage folder says about the stage: finished, part-way, or refused."""

from __future__ import annotations

import shutil

import pytest

from rayrlhf.checkpoint import POINTER
from rayrlhf.config import ConfigError
from rayrlhf.loops.pipeline import finished, mark_done


def test_a_finished_stage_gives_its_summary_and_a_changed_one_is_refused(tmp_path):
    stage = tmp_path / "ppo"
    stage.mkdir()
    mark_done(stage, "abc", {"steps": 2}, 1.5)
    assert finished(stage, "abc") == {"steps": 2}
    with pytest.raises(ConfigError, match="stage ppo .* finished with a different config"):
        finished(stage, "xyz")
    assert (stage / "done.json").exists()  # the refusal touches nothing


def test_a_stage_that_died_part_way_starts_again_or_resumes(tmp_path, capsys):
    """No done.json: without a checkpoint the folder goes (the stage starts again cleanly);
    with one it stays, to be resumed."""
    fresh = tmp_path / "ppo"
    (fresh / "model").mkdir(parents=True)
    (fresh / "metrics.jsonl").write_text("{}\n")
    assert finished(fresh, "abc") is None
    assert "[pipeline] ppo: unfinished earlier run, starting it again" in capsys.readouterr().out
    assert not fresh.exists()

    resumable = tmp_path / "sft"
    (resumable / "checkpoints").mkdir(parents=True)
    (resumable / "checkpoints" / POINTER).write_text("step-00000002")
    assert finished(resumable, "abc") is None
    assert "[pipeline] sft: unfinished earlier run, resuming it" in capsys.readouterr().out
    assert (resumable / "checkpoints" / POINTER).exists()


def _pipeline_config(tmp_path, tiny_model, *extra):
    from rayrlhf.config import load

    data = tmp_path / "rows.jsonl"
    if not data.exists():
        data.write_text('{"prompt": "a", "response": "b"}\n')
    return load(
        None,
        [
            f"run.output_dir={tmp_path}",
            "run.name=pipe",
            f"model.policy={tiny_model}",
            f"data.prompts={data}",
            f"sft.data.path={data}",
            f"reward_model.model={tiny_model}",
            f"reward_model.data.path={data}",
            *extra,
        ],
    )


def test_the_pipeline_redoes_what_a_rerun_stage_feeds_and_nothing_else(
    tmp_path, tiny_model, monkeypatch, capsys
):
    """Stage runners stood in for (each writes a model folder and says it ran): a deleted SFT
    stage runs again, PPO, built on the old SFT model, is redone, the reward model is not."""
    import rayrlhf.loops.supervised as supervised
    from rayrlhf.loops import pipeline

    ran: list[str] = []

    def stage(name):
        def run(config, *args):
            stage_dir = args[-1]
            (stage_dir / "model").mkdir(parents=True, exist_ok=True)
            ran.append(args[0] if name == "supervised" else "ppo")
            return {"stage": ran[-1]}

        return run

    monkeypatch.setattr(supervised, "run_supervised_stage", stage("supervised"))
    monkeypatch.setattr(pipeline, "run_online_stage", stage("ppo"))
    config = _pipeline_config(tmp_path, tiny_model)
    pipeline.run_pipeline(config)
    assert ran == ["sft", "reward_model", "ppo"]
    run = tmp_path / "pipe"
    assert all((run / s / "done.json").exists() for s in ("sft", "reward_model", "ppo"))

    ran.clear()
    pipeline.run_pipeline(config)
    assert ran == []  # all finished with this config

    shutil.rmtree(run / "sft")
    capsys.readouterr()
    pipeline.run_pipeline(config)
    out = capsys.readouterr().out
    assert ran == ["sft", "ppo"]
    assert "[pipeline] sft: starting" in out and "[pipeline] reward_model: finished earlier" in out
    assert "[pipeline] ppo: built on a stage that just ran again, redoing it" in out
