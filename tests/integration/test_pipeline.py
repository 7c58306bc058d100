"""`rayrlhf pipeline` on a local Ray: SFT → reward model → PPO, stage skipping, bad data."""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path

import pytest
import torch

from rayrlhf.cli import main as cli_main
from rayrlhf.config import ConfigError, load
from rayrlhf.loops.pipeline import run_pipeline
from rayrlhf.loops.supervised import run_supervised_stage

pytestmark = pytest.mark.integration

WORDS = ["movie", "film", "plot", "the", "a", "is", "was", "story", "actor", "scene"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """SFT rows, preference pairs ("good" beats "bad") and prompts, in a temporary folder."""
    out = tmp_path_factory.mktemp("pipeline_data")
    rnd = random.Random(0)

    def words(k):
        return " ".join(rnd.choice(WORDS) for _ in range(k))

    sft = [{"prompt": words(3), "response": " good " + words(2)} for _ in range(48)]
    pairs = [
        {"prompt": words(2), "chosen": words(2) + " good", "rejected": words(2) + " bad"}
        for _ in range(160)
    ]
    return {
        "sft": _jsonl(out / "sft.jsonl", sft),
        "pairs": _jsonl(out / "pairs.jsonl", pairs),
        "prompts": _jsonl(out / "prompts.jsonl", [{"prompt": words(3)} for _ in range(40)]),
    }


def _config(tiny_model, data, out, *extra):
    return load(
        None,
        [
            f"run.output_dir={out}",
            "run.name=pipe",
            "run.progress_bar=false",
            "run.num_steps=2",
            f"model.policy={tiny_model}",
            f"data.prompts={data['prompts']}",
            f"eval.prompts.path={data['prompts']}",
            "eval.num_prompts=16",
            "rollout.max_new_tokens=6",
            "learner.policy_lr=1e-3",
            "learner.value_lr=1e-3",
            f"sft.data.path={data['sft']}",
            "sft.lr=1e-3",
            "rollout.template=plain",
            "sft.learner.num_ranks=2",
            "sft.learner.zero_stage=3",
            "sft.learner.micro_batch_size=4",
            f"reward_model.model={tiny_model}",
            f"reward_model.data.path={data['pairs']}",
            "reward_model.heldout_fraction=0.2",
            "reward_model.lr=3e-3",
            "reward_model.epochs=2",
            "reward_model.learner.minibatch_size=16",
            *extra,
        ],
    )


def test_pipeline_runs_every_stage_then_skips_them(ray_local, tiny_model, data, tmp_path, capsys):
    config = _config(tiny_model, data, tmp_path, "run.checkpoint_every=2")
    summaries = run_pipeline(config)
    run = tmp_path / "pipe"
    for stage in ("sft", "reward_model", "ppo"):
        assert (run / stage / "model" / "config.json").exists(), stage
        assert (run / stage / "done.json").exists(), stage
        assert not (run / stage / "checkpoints").exists(), stage  # finished: removed
    # Each stage read the one before: PPO's policy is the SFT model, its reward the RM.
    ppo_cfg = load(run / "ppo" / "config.yaml")
    assert ppo_cfg.model.policy == str((run / "sft" / "model").resolve())
    assert ppo_cfg.reward.model == str((run / "reward_model" / "model").resolve())
    assert summaries["reward_model"]["eval/accuracy"] > 0.9
    assert summaries["sft"]["eval/loss"] < summaries["sft"]["eval/loss_before"]
    first_sft_row = json.loads((run / "sft" / "metrics.jsonl").read_text().splitlines()[0])
    assert first_sft_row["data/rows"] == 48 and first_sft_row["data/skipped"] == 0
    evals = json.loads((run / "ppo" / "eval.json").read_text())
    assert evals["before"]["samples"] == 16 and len(evals["examples"]) == 3
    assert len(evals["pairs"]) == 16 and evals["pairs"][:3] == evals["examples"]
    assert evals["before"]["policy_version"] == 0 and evals["after"]["policy_version"] == 2

    stamps = {p: p.stat().st_mtime_ns for p in run.glob("*/model/*.safetensors")}
    capsys.readouterr()
    # How a run survives failures is not what it computes: finished stages stay finished.
    as_run = (run / "config.yaml").read_text()
    again = run_pipeline(_config(tiny_model, data, tmp_path, "run.checkpoint_every=1"))
    assert (run / "config.yaml").read_text() == as_run  # a finished run stays as it was
    out = capsys.readouterr().out
    for stage in ("sft", "reward_model", "ppo"):
        assert f"[pipeline] {stage}: finished earlier" in out
    assert again["reward_model"] == json.loads(json.dumps(summaries["reward_model"]))
    assert stamps == {p: p.stat().st_mtime_ns for p in run.glob("*/model/*.safetensors")}

    # A finished stage whose config changed is refused, never silently reused, and the refusal
    # comes before anything runs or is written.
    recorded = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="stage ppo .* finished with a different config"):
        run_pipeline(_config(tiny_model, data, tmp_path, "ppo.kl_coef=0.2"))
    assert (run / "config.yaml").read_text() == recorded

    # Which stages a rerun redoes (a deleted stage, those built on it, a stage that died
    # part-way) is tested with stand-in stages in the unit tier: tests/unit/test_pipeline_stages.py.


def _stage_config(tiny_model, data, out, stage: str, *extra):
    """4 steps of ``stage``, checkpointed every 2 (SFT on 2 ZeRO-3 ranks, the RM on 1)."""
    return _config(tiny_model, data, out, f"{stage}.max_steps=4", "run.checkpoint_every=2", *extra)


@pytest.fixture(scope="module")
def clean_sft(ray_local, tiny_model, data, tmp_path_factory):
    """An uninterrupted 4-step SFT stage on 2 ZeRO-3 ranks: its folder and summary."""
    out = tmp_path_factory.mktemp("clean_sft")
    config = _stage_config(tiny_model, data, out, "sft")
    return out / "clean", run_supervised_stage(config, "sft", out / "clean")


def test_sft_gives_the_same_model_on_one_rank_and_two_zero3_ranks(
    tiny_model, data, tmp_path, clean_sft
):
    """Losses are means over the global minibatch: the rank count must not change the result."""
    one_rank = ("sft.learner.num_ranks=1", "sft.learner.zero_stage=2")
    config = _stage_config(tiny_model, data, tmp_path, "sft", *one_rank)
    one, two = run_supervised_stage(config, "sft", tmp_path / "sft-1"), clean_sft[1]
    assert one["eval/loss"] < one["eval/loss_before"]
    assert abs(one["eval/loss"] - two["eval/loss"]) < 1e-4
    assert abs(one["loss/train"] - two["loss/train"]) < 1e-4


def test_pipeline_command_fails_on_bad_rows(ray_local, tiny_model, data, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data["sft"].read_text() + "{broken\n" * 30)
    config = tmp_path / "c.yaml"
    config.write_text("{}")
    overrides = [
        f"run.output_dir={tmp_path}",
        f"model.policy={tiny_model}",
        f"data.prompts={data['prompts']}",
        "reward.function=rayrlhf.rewards.rules:target_word_frequency",
        f"sft.data.path={bad}",
    ]
    argv = ["pipeline", str(config)] + [a for o in overrides for a in ("--set", o)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "30 of 78 rows malformed, more than max_bad_fraction=0.1" in err
    assert "row 49" in err


@pytest.mark.parametrize("stage", ["sft", "reward_model"])
def test_a_stage_that_died_mid_way_resumes_to_the_uninterrupted_result(
    ray_local, tiny_model, data, tmp_path, monkeypatch, stage, request
):
    """Checkpoints every 2 steps; the driver dies in step 3; the rerun resumes from step 2 and
    saves the parameters an uninterrupted stage saves (SFT on 2 ZeRO-3 ranks, RM on 1)."""
    from safetensors.torch import load_file

    from rayrlhf.faults import RunFailed
    from rayrlhf.metrics import RunLogger, comparable, read_metrics

    config = _stage_config(tiny_model, data, tmp_path, stage)
    if stage == "sft":
        clean_dir = request.getfixturevalue("clean_sft")[0]
    else:
        clean_dir = tmp_path / "clean"
        run_supervised_stage(config, stage, clean_dir)
    log = RunLogger.log

    def dies_in_step_3(self, step, metrics, samples=None, advance=True):
        if step == 3:
            raise RuntimeError("driver died")
        log(self, step, metrics, samples, advance)

    monkeypatch.setattr(RunLogger, "log", dies_in_step_3)
    with pytest.raises(RunFailed, match="driver died"):
        run_supervised_stage(config, stage, tmp_path / "resumed")
    monkeypatch.setattr(RunLogger, "log", log)
    assert len(read_metrics(tmp_path / "resumed")) == 3  # steps 0 (eval), 1, 2
    run_supervised_stage(config, stage, tmp_path / "resumed")

    clean = load_file(clean_dir / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert clean.keys() == resumed.keys()
    assert all(torch.equal(clean[k], resumed[k]) for k in clean)
    rows = [read_metrics(d) for d in (clean_dir, tmp_path / "resumed")]
    assert [r["step"] for r in rows[1]] == [0, 1, 2, 3, 4]
    assert comparable(rows[0]) == comparable(rows[1])


def test_a_stage_checkpoints_on_a_work_error_and_reports_learner_restarts(
    ray_local, tiny_model, data, tmp_path, monkeypatch, clean_sft
):
    """The step loop every driver shares: an error between steps leaves a checkpoint there
    (step 3, between the every-2 ones), and a rank killed in step 3 restarts the group from
    step 2, counted in faults/learner_restarts; both end equal to the uninterrupted stage."""
    import ray
    from safetensors.torch import load_file

    from rayrlhf.faults import RunFailed
    from rayrlhf.loops.supervised import SupervisedStage
    from rayrlhf.metrics import read_metrics

    config = _stage_config(tiny_model, data, tmp_path, "sft")

    def fails_after_step_3(self):
        if self.state.step == 3:
            raise OSError("status report failed")

    monkeypatch.setattr(SupervisedStage, "after_step", fails_after_step_3)
    with pytest.raises(RunFailed, match="checkpoint written after step 3"):
        run_supervised_stage(config, "sft", tmp_path / "work-error")
    monkeypatch.undo()
    run_supervised_stage(config, "sft", tmp_path / "work-error")  # resumes from step 3

    def kills_rank_1_in_step_3(self):
        if self.state.step == 2 and not self.faults.learner_restarts:
            ray.kill(self.group.actors[1])

    monkeypatch.setattr(SupervisedStage, "before_step", kills_rank_1_in_step_3)
    run_supervised_stage(config, "sft", tmp_path / "rank-lost")
    rows = read_metrics(tmp_path / "rank-lost")
    assert [r.get("faults/learner_restarts") for r in rows] == [None, 0, 0, 1, 1]

    clean = load_file(clean_sft[0] / "model" / "model.safetensors")
    for run in ("work-error", "rank-lost"):
        model = load_file(tmp_path / run / "model" / "model.safetensors")
        assert all(torch.equal(clean[k], model[k]) for k in clean), run
        assert [r["step"] for r in read_metrics(tmp_path / run)] == [0, 1, 2, 3, 4]


def _offline_base(tiny_model, data, out, name: str) -> list[str]:
    """What the DPO and ILQL pipelines share: the tiny policy, its prompts, the rule reward."""
    return [
        f"run.output_dir={out}",
        f"run.name={name}",
        "run.progress_bar=false",
        f"model.policy={tiny_model}",
        f"data.prompts={data['prompts']}",
        "reward.function=rayrlhf.rewards.rules:target_word_frequency",
        f"eval.prompts.path={data['prompts']}",
        "eval.num_prompts=16",
        "rollout.max_new_tokens=6",
        "rollout.template=plain",
    ]


def _rerun_skips(make_config, stage: str, summaries: dict, capsys) -> None:
    """The same pipeline again: the finished offline stage is skipped (its model untouched, its
    summary read back), and the same stage with a changed config is refused."""
    config = make_config()
    run = Path(config.run.output_dir) / config.run.name / stage
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("model/*")}
    capsys.readouterr()
    again = run_pipeline(config)
    assert f"[pipeline] {stage}: finished earlier" in capsys.readouterr().out
    assert again[stage] == json.loads(json.dumps(summaries[stage]))
    assert stamps == {p: p.stat().st_mtime_ns for p in run.glob("model/*")}
    with pytest.raises(ConfigError, match=f"stage {stage} .* finished with a different config"):
        run_pipeline(make_config(f"{stage}.lr=0.5"))


def _dpo_config(tiny_model, data, out, *extra):
    """DPO on the "good beats bad" pairs as the third step (no SFT or RM stage: the rule reward,
    the frequency of "good", judges held-out continuations before and after)."""
    return load(
        None,
        [
            *_offline_base(tiny_model, data, out, "dpo"),
            "reference.num_workers=2",
            f"dpo.data.path={data['pairs']}",
            "dpo.heldout_fraction=0.2",
            "dpo.beta=0.5",
            "dpo.lr=2e-3",
            "dpo.max_tokens=24",
            "dpo.max_prompt_tokens=12",
            "dpo.epochs=2",
            "dpo.learner.num_ranks=2",
            "dpo.learner.zero_stage=3",
            "dpo.learner.minibatch_size=16",
            "dpo.learner.micro_batch_size=4",
            *extra,
        ],
    )


def test_dpo_as_third_step_gains_on_held_out_prompts_and_agrees_across_ranks(
    ray_local, tiny_model, data, tmp_path, capsys
):
    """The pipeline's DPO stage: two reference workers score every pair once, two ZeRO-3 ranks
    train, and the closing comparison (same prompts and seeds before and after) shows the
    preferred word said more often. One rank, reading the same reference parts, trains to the
    same held-out loss."""
    from rayrlhf.loops.dpo import with_reference

    summaries = run_pipeline(_dpo_config(tiny_model, data, tmp_path))
    stage = tmp_path / "dpo" / "dpo"
    assert sorted(p.name for p in (stage / "reference_logprobs").glob("*.pt")) == [
        "part-000-of-002.pt",
        "part-001-of-002.pt",
    ]
    dpo = summaries["dpo"]
    assert abs(dpo["eval/loss_before"] - 0.6931) < 1e-3  # policy = reference at the start
    assert dpo["eval/accuracy"] > 0.9 and dpo["eval/loss"] < 0.4
    gain = dpo["eval"]["gain"]
    assert gain["mean"] > 2 * gain["stderr"] > 0, gain
    assert dpo["eval"]["after"]["kl/mean"] > 0.05  # it moved away from the reference
    _rerun_skips(partial(_dpo_config, tiny_model, data, tmp_path), "dpo", summaries, capsys)

    one_rank = _dpo_config(tiny_model, data, tmp_path, "dpo.learner.num_ranks=1")
    one_rank = with_reference(one_rank, stage / "reference_logprobs")
    one = run_supervised_stage(one_rank, "dpo", tmp_path / "dpo-1")
    assert abs(one["eval/loss"] - dpo["eval/loss"]) < 1e-4
    assert abs(one["loss/train"] - dpo["loss/train"]) < 1e-4


def _ilql_config(tiny_model, data, out, *extra):
    """ILQL on the same pairs (chosen +1, rejected −1) as the third step, judged as DPO is."""
    return load(
        None,
        [
            *_offline_base(tiny_model, data, out, "ilql"),
            f"ilql.data.path={data['pairs']}",
            "ilql.feedback=pairwise",
            "ilql.heldout_fraction=0.2",
            "ilql.lr=1e-3",
            "ilql.alpha=1.0",
            "ilql.steps_for_target_q_sync=2",
            "ilql.decode_beta=3.0",
            "ilql.top_k=0",
            "ilql.max_tokens=24",
            "ilql.max_prompt_tokens=12",
            "ilql.epochs=2",
            "ilql.learner.num_ranks=2",
            "ilql.learner.minibatch_size=16",
            "ilql.learner.micro_batch_size=8",
            *extra,
        ],
    )


def test_ilql_as_third_step_gains_on_held_out_prompts_and_agrees_across_ranks(
    ray_local, tiny_model, data, tmp_path, capsys
):
    """The pipeline's ILQL stage on two ranks: the rollout workers decode the saved ILQL
    folder (policy plus heads) and say "good" more often than the starting policy on the same
    prompts and seeds. One rank trains to the same held-out loss."""
    summaries = run_pipeline(_ilql_config(tiny_model, data, tmp_path))
    ilql = summaries["ilql"]
    assert ilql["eval/loss"] < ilql["eval/loss_before"]
    gain = ilql["eval"]["gain"]
    assert gain["mean"] > 2 * gain["stderr"] > 0, gain
    assert ilql["eval"]["after"]["kl/mean"] > 0.05
    assert (tmp_path / "ilql" / "ilql" / "model" / "ilql_heads.safetensors").is_file()
    _rerun_skips(partial(_ilql_config, tiny_model, data, tmp_path), "ilql", summaries, capsys)

    one = run_supervised_stage(
        _ilql_config(tiny_model, data, tmp_path, "ilql.learner.num_ranks=1"),
        "ilql",
        tmp_path / "ilql-1",
    )
    assert abs(one["eval/loss"] - ilql["eval/loss"]) < 1e-4
    assert abs(one["loss/train"] - ilql["loss/train"]) < 1e-4
