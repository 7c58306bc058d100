"""A user's mistakes cost nothing (no Ray): each is caught before any actor starts, with the
dotted field or the file, line and column; a finished run is never overwritten."""

from __future__ import annotations

import json

import pytest
from ray import exceptions as rex

from rayrlhf.config import ConfigError, load
from rayrlhf.faults import is_lost
from rayrlhf.loops import pipeline
from rayrlhf.loops.done import mark_done
from rayrlhf.preflight import check_before_start, check_reward_function


@pytest.fixture
def base(tiny_model, prompts_file, tmp_path) -> list[str]:
    return [
        f"model.policy={tiny_model}",
        f"data.prompts={prompts_file}",
        "reward.function=rayrlhf.rewards.rules:target_word_frequency",
        f"run.output_dir={tmp_path}",
        "run.name=finished",
    ]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
        ("rayrlhf.rewards.rules:no_such_fn", "has no attribute 'no_such_fn'"),
        ("rayrlhf.rewards.rules:__doc__", "is not callable"),
    ],
)
def test_a_reward_function_that_cannot_work_is_refused_by_its_field(spec, says):
    with pytest.raises(ConfigError, match="reward.function: ") as err:
        check_reward_function(spec)
    assert says in str(err.value)
    check_reward_function("rayrlhf.rewards.rules:target_word_frequency")


def test_a_policy_folder_as_the_reward_model_is_refused_before_ray(base, tiny_model, tmp_path):
    from rayrlhf.tiny_models import save_tiny_reward_model

    without_fn = [b for b in base if not b.startswith("reward.function")]
    config = load(None, [*without_fn, f"reward.model={tiny_model}"])
    with pytest.raises(ConfigError, match="reward.model: .* not a trained reward model"):
        check_before_start(config, online=True)
    rm = save_tiny_reward_model(tmp_path / "rm")
    check_before_start(load(None, [*without_fn, f"reward.model={rm}"]), online=False)


def test_a_missing_third_stage_table_is_found_before_anything_trains(base, tmp_path):
    config = load(None, [*base, f"dpo.data.path={tmp_path / 'missing.jsonl'}"])
    with pytest.raises(ConfigError, match="dpo.data.path: no such file"):
        check_before_start(config, online=False)


def test_yaml_errors_name_the_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  name: x\n  seed: [1, 2\nmodel: {policy: a}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line \d+, column \d+: YAML error"):
        load(bad)
    with pytest.raises(ConfigError, match=r"--set run\.name=\[1, line 1, column \d+"):
        load(None, ["run.name=[1"])


@pytest.mark.parametrize("value", ["yes", "true", "on"])
def test_a_boolean_is_not_a_number(base, value):
    with pytest.raises(ConfigError, match="run.num_steps: .*a number is needed"):
        load(None, [*base, f"run.num_steps={value}"])
    assert load(None, [*base, "run.num_steps=3", "learner.policy_lr=1e-5"]).run.num_steps == 3


def test_a_step_larger_than_the_prompts_file_is_said(base):
    warnings = check_before_start(load(None, [*base, "rollout.prompts_per_step=8"]), online=True)
    assert len(warnings) == 1 and "rollout.prompts_per_step is 8" in warnings[0]
    assert "5 usable prompts" in warnings[0]
    fits = [
        "rollout.prompts_per_step=4",
        "rollout.chunk_size=4",
        "learner.minibatch_size=4",
        "learner.micro_batch_size=4",
    ]
    assert check_before_start(load(None, [*base, *fits]), online=True) == []


def test_an_actor_whose_construction_raised_is_not_a_lost_worker():
    """Building a role from its config failed: a replacement would fail the same way."""
    assert not is_lost(rex.RayActorError(error_msg="ModuleNotFoundError", actor_init_failed=True))
    assert is_lost(rex.RayActorError(error_msg="the process died"))


def test_config_paths_resolve_next_to_the_file_from_any_directory(tmp_path, monkeypatch):
    (tmp_path / "cfg" / "data").mkdir(parents=True)
    (tmp_path / "cfg" / "data" / "p.jsonl").write_text('{"prompt": "a"}\n')
    config = tmp_path / "cfg" / "c.yaml"
    config.write_text(
        "model: {policy: /m}\ndata: {prompts: data/p.jsonl}\n"
        "reward: {function: 'a:b'}\nrun: {output_dir: runs}\n"
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder
    loaded = load(config)
    assert loaded.data.prompts == str(tmp_path / "cfg" / "data" / "p.jsonl")
    assert loaded.run.output_dir == "runs"  # not next to the file: the working directory's


def test_a_finished_train_run_is_kept_and_a_changed_one_refused(base, tmp_path, monkeypatch):
    config = load(None, base)
    run_dir = pipeline.run_dir_of(config)
    run_dir.mkdir(parents=True)
    started = []
    monkeypatch.setattr(pipeline, "run_online_stage", lambda c, d: started.append(d) or {"a": 1})
    assert pipeline.run_train(config, run_dir) == ({"a": 1}, False)
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    # The same command again: reported as finished, nothing run, every file as it was.
    assert pipeline.run_train(config, run_dir) == ({"a": 1}, True)
    assert len(started) == 1
    # How it runs is not what it computes: still the finished run.
    assert pipeline.run_train(load(None, [*base, "rollout.num_workers=3"]), run_dir)[1]
    with pytest.raises(ConfigError, match="another value of learner.policy_lr"):
        pipeline.run_train(load(None, [*base, "learner.policy_lr=5e-3"]), run_dir)
    assert files == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    # Starting over is an explicit choice.
    assert pipeline.run_train(load(None, [*base, "run.resume=never"]), run_dir)[1] is False
    assert len(started) == 2


def test_a_finished_pipeline_moved_to_another_folder_is_recognised(base, tmp_path):
    here = load(None, base)
    moved = load(None, [*base, f"run.output_dir={tmp_path / 'elsewhere'}"])
    assert pipeline.fingerprints(here) == pipeline.fingerprints(moved)
    stage = tmp_path / "elsewhere" / "ppo"
    stage.mkdir(parents=True)
    part = pipeline.stage_parts(here)["ppo"]
    mark_done(stage, pipeline.fingerprints(here)["ppo"], {"steps": 2}, 1.0, part)
    assert pipeline.finished(stage, pipeline.fingerprints(moved)["ppo"]) == {"steps": 2}
    decided = json.loads((stage / "done.json").read_text())["decided"]
    assert decided["run.seed"] == 0 and "run.output_dir" not in decided  # where, not what
