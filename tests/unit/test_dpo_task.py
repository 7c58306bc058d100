"""The DPO task in process (one rank, no Ray): reference parts, learning, refusals."""

from __future__ import annotations

import json
import math

import pytest
from preference_rows import good_beats_bad
from supervised_resume import setup_learner, straight_and_resumed

from rayrlhf.data.tables import DataError
from rayrlhf.roles.preference_reference import PreferenceReference


@pytest.fixture
def dpo_config(make_config, tmp_path):
    def make(*extra: str):
        train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
        for path, rows in (
            (train, good_beats_bad(192, 1, tie_every=8, filler=2)),
            (held, good_beats_bad(48, 2, filler=2)),
        ):
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return make_config(
            f"dpo.data.path={train}",
            f"dpo.heldout.path={held}",
            f"dpo.reference_logprobs={tmp_path / 'ref'}",
            "dpo.lr=2e-3",
            "dpo.beta=0.5",
            "dpo.max_tokens=24",
            "dpo.max_prompt_tokens=12",
            "dpo.learner.minibatch_size=16",
            "dpo.learner.micro_batch_size=8",
            "dpo.eval_every=100",
            *extra,
        )

    return make


def _reference(config, count: int = 1) -> None:
    worker = PreferenceReference(config)
    for index in range(count):
        worker.logprobs(config.dpo.reference_logprobs, index, count)


def test_dpo_starts_at_ln2_and_learns_the_preference_on_held_out_pairs(dpo_config):
    """At step 0 the policy is the reference: held-out loss ln 2, margin 0 (so the reference
    parts, written by two workers, line up with the learner's pairs). After training the
    implicit reward ranks held-out pairs by "good" vs "bad" clearly above chance."""
    config = dpo_config()
    _reference(config, count=2)
    learner = setup_learner(config, "dpo")
    before = learner.evaluate()
    assert before["eval/loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert abs(before["eval/margin"]) < 1e-4
    for step in range(learner.total_steps):
        last = learner.train_step(step)
    after = learner.evaluate()
    assert last["train/accuracy"] > 0.8
    assert after["eval/accuracy"] > 0.85 and after["eval/margin"] > 0.5, after
    assert after["eval/loss"] < math.log(2) - 0.2
    assert after["eval/logp_chosen"] > before["eval/logp_chosen"]


def test_reference_parts_of_other_pairs_are_refused(dpo_config, tmp_path):
    _reference(dpo_config())
    changed = dpo_config("dpo.ties=drop")  # fewer training pairs: other pairs
    with pytest.raises(DataError, match="reference log-probs of other pairs"):
        setup_learner(changed, "dpo")
    missing = dpo_config(f"dpo.reference_logprobs={tmp_path / 'none'}")
    with pytest.raises(DataError, match="dpo needs the reference's log-probs"):
        setup_learner(missing, "dpo")


def test_a_rerun_keeps_the_reference_parts_and_drops_those_of_another_worker_count(
    dpo_config, tmp_path, monkeypatch
):
    """The parts of the current worker count stand (nothing computed again, no worker
    started); parts written with another count are removed first."""
    from rayrlhf import cluster
    from rayrlhf.loops.dpo import reference_logprobs
    from rayrlhf.roles.preference_reference import part_path

    config = dpo_config("reference.num_workers=2")
    stage = tmp_path / "stage"
    for index in range(2):
        part_path(stage / "reference_logprobs", index, 2).parent.mkdir(parents=True, exist_ok=True)
        part_path(stage / "reference_logprobs", index, 2).write_bytes(b"kept")
    part_path(stage / "reference_logprobs", 0, 3).write_bytes(b"stale")

    def no_workers(*args, **kwargs):
        raise AssertionError("no reference worker may start when every part is there")

    monkeypatch.setattr(cluster, "role_group", no_workers)
    folder = reference_logprobs(config, stage)
    assert sorted(p.name for p in folder.iterdir()) == ["part-000-of-002.pt", "part-001-of-002.pt"]


def test_a_resumed_dpo_run_ends_where_an_uninterrupted_one_does(dpo_config, tmp_path):
    """4 steps straight, and 2 + (load, 2) in a new learner reading the same reference parts,
    end with equal parameters and optimizer state: nothing that decides the remaining steps is
    left out of the checkpoint."""
    config = dpo_config("dpo.max_steps=4")
    _reference(config)
    first, second = straight_and_resumed(config, "dpo", tmp_path / "ckpt")
    assert first.state_digest() == second.state_digest()
