"""The checkpoint commit protocol, the resume rules, log rewinding and stop signals (no Ray)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from rayrlhf import checkpoint, resume
from rayrlhf.checkpoint import CheckpointError
from rayrlhf.config.results import changed_fields
from rayrlhf.faults import StopRequest
from rayrlhf.metrics import RunLogger, read_metrics


def _write(root, step, payload=b"weights"):
    tmp = checkpoint.begin(root, step)
    (tmp / "learner").mkdir()
    (tmp / "learner" / "rank-000.pt").write_bytes(payload * 100)
    (tmp / "driver.json").write_text(json.dumps({"step": step}))
    return checkpoint.commit(tmp, step, {"world_size": 1, "zero_stage": 2, "config": {}}, keep=2)


def test_commit_then_verify_and_the_pointer_names_the_newest(tmp_path):
    root = tmp_path / "checkpoints"
    assert checkpoint.latest(root) is None
    _write(root, 2)
    _write(root, 4)
    found = checkpoint.latest(root)
    assert found.path.name == "step-00000004" and found.step == 4
    assert set(found.manifest["files"]) == {"driver.json", "learner/rank-000.pt"}
    _write(root, 6)  # keep=2: the oldest goes
    assert sorted(p.name for p in root.glob("step-*")) == ["step-00000004", "step-00000006"]


def test_a_crash_before_the_manifest_leaves_the_previous_checkpoint_current(tmp_path):
    root = tmp_path / "checkpoints"
    _write(root, 2)
    tmp = checkpoint.begin(root, 4)  # parts written, then the process died: no commit
    (tmp / "driver.json").write_text("{}")
    assert checkpoint.latest(root).step == 2
    checkpoint.begin(root, 6)  # the next write clears the leftover
    assert not tmp.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "learner/rank-000.pt has 690 bytes"),
        (lambda p: p.write_bytes(b"X" * 700), "does not match its sha256"),
        (lambda p: p.unlink(), "learner/rank-000.pt is missing"),
    ],
    ids=["truncated", "wrong-hash", "missing"],
)
def test_a_damaged_checkpoint_is_refused_by_name(tmp_path, damage, message):
    root = tmp_path / "checkpoints"
    _write(root, 2)
    damage(root / "step-00000002" / "learner" / "rank-000.pt")
    with pytest.raises(CheckpointError, match=message) as err:
        checkpoint.latest(root)
    assert "step-00000002 refused" in str(err.value)
    # `auto` refuses too: a damaged checkpoint is never replaced by a silent fresh start.
    with pytest.raises(CheckpointError):
        resume.find(root, "auto")


def test_a_missing_manifest_is_refused(tmp_path):
    root = tmp_path / "checkpoints"
    _write(root, 2)
    (root / "step-00000002" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no valid manifest.json"):
        checkpoint.latest(root)


def test_resume_policies(tmp_path):
    root = tmp_path / "checkpoints"
    with pytest.raises(CheckpointError, match="run.resume=must"):
        resume.find(root, "must")
    assert resume.find(root, "auto") is None
    _write(root, 2)
    assert resume.find(root, "must").step == 2
    assert resume.find(root, "never") is None and root.exists()  # a lookup does not delete
    resume.discard(root)
    assert not root.exists()


def test_fields_that_decide_the_math_must_match_and_resources_may_change():
    saved = {
        "learner": {"policy_lr": 1e-5, "num_cpus": 1, "num_ranks": 2},
        "rollout": {"num_workers": 1, "temperature": 1.0},
        "run": {"num_steps": 10, "seed": 0},
        "timeouts": {"train_s": 10},
    }
    now = {
        "learner": {"policy_lr": 2e-5, "num_cpus": 4, "num_ranks": 2},
        "rollout": {"num_workers": 3, "temperature": 0.7},
        "run": {"num_steps": 20, "seed": 0},
        "timeouts": {"train_s": 99},
    }
    assert changed_fields(saved, now, set()) == ["learner.policy_lr", "rollout.temperature"]


def test_another_rank_count_resumes_and_another_zero_stage_is_refused(tmp_path):
    found = _write(tmp_path / "c", 2)  # 1 rank, ZeRO-2
    resume.check_compatible(found, {}, (2, 2), "learner")  # resharded on load
    with pytest.raises(
        CheckpointError, match="written under ZeRO-2; this config has ZeRO-3"
    ) as err:
        resume.check_compatible(found, {}, (2, 3), "learner")
    assert "learner.zero_stage=2" in str(err.value)


def test_a_changed_data_file_is_refused(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "a"}\n')
    tree = {"data": {"prompts": str(data)}}
    tmp = checkpoint.begin(tmp_path / "c", 1)
    fields = {"world_size": 1, "zero_stage": 2, "config": tree, "data": resume.data_digests(tree)}
    found = checkpoint.commit(tmp, 1, fields, keep=1)
    resume.check_compatible(found, tree, (1, 2), "learner")
    data.write_text('{"prompt": "b"}\n')
    with pytest.raises(CheckpointError, match="prompts.jsonl changed"):
        resume.check_compatible(found, tree, (1, 2), "learner")


def test_logs_rewind_to_a_position_and_tensorboard_is_rebuilt(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path, {}, 5, progress=False)
    for step in range(1, 4):
        logger.log(
            step,
            {"reward/mean": float(step)},
            [{"sample_id": f"{step}-0", "prompt": "p", "response": "r", "reward": 0.0}],
        )
        if step == 2:
            kept = logger.position()
    logger.rewind(kept)
    logger.log(3, {"reward/mean": 30.0})
    logger.close()
    assert [(r["step"], r["reward/mean"]) for r in read_metrics(tmp_path)] == [
        (1, 1.0),
        (2, 2.0),
        (3, 30.0),
    ]
    assert (tmp_path / "samples.jsonl").read_text().count("\n") == 2
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward/mean")] == [
        (1, 1.0),
        (2, 2.0),
        (3, 30.0),
    ]
    # A fresh start (no checkpoint) drops what an earlier attempt wrote.
    RunLogger(tmp_path, {}, 5, progress=False).close()
    assert read_metrics(tmp_path) == []


def test_a_stop_signal_sets_a_flag_and_a_second_ctrl_c_interrupts():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    signal.signal(signal.SIGINT, before)


def _learner_files(folder):
    names = [
        "policy/state/mp_rank_00_model_states.pt",
        "policy/state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "policy/state/zero_pp_rank_1_mp_rank_00_optim_states.pt",
        "rank-000.pt",
        "rank-001.pt",
    ]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode() * 10)
    return names


def test_each_rank_hashes_the_files_it_wrote_and_checks_them_before_loading(tmp_path):
    """Rank-owned files are hashed by their rank, not read again by the driver, and checked by
    their rank before it loads them; the driver still checks every file's size."""
    tmp = checkpoint.begin(tmp_path / "c", 2)
    learner = tmp / "learner"
    names = _learner_files(learner)
    owned = {r: checkpoint.owned_files(learner, r) for r in (0, 1)}
    rel = {r: {p.relative_to(learner).as_posix() for p in owned[r]} for r in owned}
    assert rel[1] == {names[2], names[4]} and rel[0] | rel[1] == set(names)
    assert not rel[0] & rel[1]
    hashed = {}
    for r in (0, 1):
        hashed.update(checkpoint.hash_files(learner, owned[r], f"rank {r}"))
    (tmp / "driver.json").write_text("{}")
    fields = {"world_size": 2, "zero_stage": 2, "config": {}}
    found = checkpoint.commit(tmp, 2, fields, 1, {f"learner/{k}": v for k, v in hashed.items()})
    entries = found.manifest["files"]
    assert entries["learner/rank-001.pt"]["by"] == "rank 1"
    assert entries["driver.json"]["by"] == "driver"
    part = found.path / "learner" / names[2]
    part.write_bytes(b"X" * part.stat().st_size)  # same size, other bytes
    checkpoint.verify(found.path)  # the driver does not read rank 1's bytes ...
    learner_entries = {k.removeprefix("learner/"): v for k, v in entries.items() if "/" in k}
    checkpoint.check_owned(found.path / "learner", 0, learner_entries, ranks=2)
    with pytest.raises(CheckpointError, match="checked by learner rank 1"):  # ... rank 1 does
        checkpoint.check_owned(found.path / "learner", 1, learner_entries, ranks=2)
    part.write_bytes(b"X")  # a size change is caught by the driver before any rank starts
    with pytest.raises(CheckpointError, match="has 1 bytes"):
        checkpoint.verify(found.path)


def test_a_part_changed_after_its_rank_hashed_it_is_not_committed(tmp_path):
    tmp = checkpoint.begin(tmp_path / "c", 2)
    (tmp / "learner").mkdir()
    _learner_files(tmp / "learner")
    hashed = checkpoint.hash_files(tmp, [tmp / "learner" / "rank-000.pt"], "rank 0")
    (tmp / "learner" / "rank-000.pt").write_bytes(b"longer than before" * 100)
    with pytest.raises(CheckpointError, match="changed after its rank hashed it"):
        checkpoint.commit(tmp, 2, {"world_size": 1, "zero_stage": 2, "config": {}}, 1, hashed)


def test_a_smaller_group_checks_the_files_of_the_ranks_it_replaces(tmp_path):
    """Resumed on 1 rank, rank 0 checks saved rank 1's files too (nobody else will)."""
    learner = tmp_path / "learner"
    names = _learner_files(learner)
    entries = checkpoint.hash_files(learner, [learner / n for n in names], "rank")
    (learner / names[2]).write_bytes(b"Y" * (learner / names[2]).stat().st_size)
    with pytest.raises(CheckpointError, match="zero_pp_rank_1_mp_rank_00_optim_states.pt"):
        checkpoint.check_owned(learner, 0, entries, ranks=1)


def test_a_zero3_checkpoint_resumes_only_on_its_rank_count(tmp_path):
    tmp = checkpoint.begin(tmp_path / "c", 2)
    (tmp / "driver.json").write_text("{}")
    found = checkpoint.commit(tmp, 2, {"world_size": 2, "zero_stage": 3, "config": {}}, keep=1)
    resume.check_compatible(found, {}, (2, 3), "learner")
    with pytest.raises(CheckpointError, match="written by 2 learner ranks under ZeRO-3") as err:
        resume.check_compatible(found, {}, (1, 3), "learner")
    assert "learner.num_ranks=2" in str(err.value)
