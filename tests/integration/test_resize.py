"""Rollout workers resized mid-run (1 → 3 → 2), by `rayrlhf scale` and by the trainer call."""

from __future__ import annotations

import pytest
import ray

from rayrlhf.buffer import SampleState
from rayrlhf.cli import main as cli_main
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.metrics import read_metrics

pytestmark = pytest.mark.integration


def _alive(prefix: str, role: str) -> int:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    return sum(n.startswith(prefix) and f"/{role}-" in n for n in names)


def _assert_rollout_holds_learner_weights(trainer: OnlineTrainer) -> None:
    learner_sum = trainer.learners.policy_checksums()[0]
    sums = ray.get([w.weights_checksum.remote() for w in trainer.rollout.actors])
    assert sums == pytest.approx([learner_sum] * len(sums), abs=1e-6)


# By broadcast, with 2 ZeRO-3 ranks: added workers join the weight group. (Workers added with
# the object-store path are the async test's resize and the survival tests' replacements.)
SYNC = (
    "weight_sync.method=broadcast",
    "weight_sync.bucket_mb=0.05",  # several buckets for the tiny model
    "learner.num_ranks=2",
    "learner.zero_stage=3",
)


def test_resize_one_three_two_generates_each_prompt_once(ray_local, make_config, tmp_path, capsys):
    cfg = make_config(
        "run.name=resize",
        "rollout.prompts_per_step=12",
        "rollout.chunk_size=2",
        "learner.minibatch_size=12",
        "learner.micro_batch_size=2",
        *SYNC,
    )
    trainer = OnlineTrainer(cfg, tmp_path / "run")
    prefix = f"{cfg.run.name}-"
    try:
        counts, history = [], []
        history += trainer.run(1)
        counts.append(_alive(prefix, "rollout"))
        # The command-line way: a request through the run's control actor, applied between steps.
        assert cli_main(["scale", "resize", "--rollout-workers", "3"]) == 0
        assert "requested 3 rollout workers" in capsys.readouterr().out
        history += trainer.run(1)
        counts.append(_alive(prefix, "rollout"))
        versions = ray.get([w.get_policy_version.remote() for w in trainer.rollout.actors])
        _assert_rollout_holds_learner_weights(trainer)
        trainer.set_rollout_workers(2)  # the trainer call
        history += trainer.run(1)
        counts.append(_alive(prefix, "rollout"))
        _assert_rollout_holds_learner_weights(trainer)
        assert cli_main(["scale", "no-such-run", "--rollout-workers", "2"]) == 2
    finally:
        trainer.shutdown()

    assert counts == [1, 3, 2]
    # Three run(1) calls continue one log: a row per step, none dropped by the later calls.
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert [m["rollout/workers"] for m in history] == [1, 3, 2]
    assert versions == [2, 2, 2]
    # Every prompt of every step generated and trained exactly once: 3 steps x 12 sample ids.
    assert trainer.buffer.count(SampleState.TRAINED) == 36
    assert sorted(trainer.buffer.ledger) == sorted(f"{s}-{i}" for s in range(3) for i in range(12))
    # Added workers had the current weights before generating: their behaviour log-probs match
    # the learner's (and the learner refuses samples of an older version outright).
    assert all(m["rollout/logprob_mismatch"] < 1e-4 for m in history)
    assert all(m["sync/bytes"] > 0 for m in history)
