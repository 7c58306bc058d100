"""Resume on another learner rank count: a checkpoint written by N ranks resumed by M.

What "exact" means (rayrlhf.reshard): the M ranks load, bit for bit, the weights and Adam
moments the N ranks saved. Tested as: an M-rank run resumed from the N-rank checkpoint equals,
parameters, optimizer state and metrics bit for bit, an M-rank run resumed from the same state
written by M ranks (the resharded state saved again by those M ranks); and the rest is what any
resume keeps: one metrics row per step, every sample trained exactly once, the prompt position
continued (the driver's part of a checkpoint does not depend on the rank count). One chain
covers both ways: 2 ranks (ZeRO-2) → 1 rank (run as stage 0) → 2 ranks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from trained import train

from rayrlhf.buffer import SampleState
from rayrlhf.config import load
from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.metrics import comparable, read_metrics
from rayrlhf.reshard import MOMENTS, read_full_state, zero_param_names

pytestmark = pytest.mark.integration

STEPS, PER_STEP = 4, 8


def _config(tiny_model, prompts_file, root, name, ranks):
    return load(
        None,
        [
            f"model.policy={tiny_model}",
            f"data.prompts={prompts_file}",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
            f"run.output_dir={root}",
            f"run.name={name}",
            "run.progress_bar=false",
            f"run.num_steps={STEPS}",
            "run.checkpoint_every=2",
            f"rollout.prompts_per_step={PER_STEP}",
            "rollout.chunk_size=4",
            "rollout.max_new_tokens=8",
            f"learner.num_ranks={ranks}",
            "learner.zero_stage=2",
            f"learner.minibatch_size={PER_STEP}",
            "learner.micro_batch_size=2",
            "learner.policy_lr=1e-3",
            "learner.value_lr=1e-3",
            "online.kl_coef=0",  # no reference workers: one actor less to start, five times
        ],
    )


def _step2(run_dir: Path, engine: str) -> Path:
    return run_dir / "checkpoints" / "step-00000002" / "learner" / engine / "state"


def _same_full_state(a_dir: Path, b_dir: Path, names_from: Path) -> None:
    """Weights, both Adam moments, Adam's step and the engine counters equal bit for bit."""
    for engine in ("policy", "value"):
        names = zero_param_names(_step2(names_from, engine))
        a = read_full_state(_step2(a_dir, engine), names)
        b = read_full_state(_step2(b_dir, engine), names)
        for x, y in ((a.params, b.params), *((a.moments[k], b.moments[k]) for k in MOMENTS)):
            assert all(torch.equal(x[n], y[n]) for n in names), engine
        assert float(a.step) == float(b.step) > 0 and a.counters == b.counters


def test_a_checkpoint_resumes_on_another_rank_count(ray_local, tiny_model, prompts_file, tmp_path):
    def config(name, ranks):
        return _config(tiny_model, prompts_file, tmp_path, name, ranks)

    written = train(config("written", 2), steps=2)  # the step-2 checkpoint, by 2 ranks
    assert len(written["rows"]) == 2

    def reshard(source: str, ranks: int) -> tuple[dict, dict]:
        """Resume ``source``'s step-2 checkpoint on ``ranks`` ranks, resharded; save it again
        as those ranks hold it (into a copy), then run both to the end."""
        resharded, rewritten = f"{source}-on{ranks}", f"{source}-on{ranks}-saved"
        shutil.copytree(tmp_path / source, tmp_path / resharded)
        trainer = OnlineTrainer(config(resharded, ranks))
        try:
            trainer.save_checkpoint()  # the same state, now written by `ranks` ranks
            shutil.copytree(tmp_path / resharded, tmp_path / rewritten)
            trainer.run()
            first = {"digests": trainer.learners.state_digests(), "ledger": trainer.buffer.ledger}
        finally:
            trainer.shutdown()
        first["rows"] = read_metrics(tmp_path / resharded)
        return first, train(config(rewritten, ranks))

    on_one, on_one_again = reshard("written", 1)  # 2 → 1
    _same_full_state(tmp_path / "written", tmp_path / "written-on1-saved", tmp_path / "written")
    on_two, on_two_again = reshard("written-on1-saved", 2)  # 1 → 2
    _same_full_state(tmp_path / "written", tmp_path / "written-on1-saved-on2-saved",
                     tmp_path / "written")  # fmt: skip

    ids = sorted(f"{s}-{i}" for s in range(STEPS) for i in range(PER_STEP))
    for resumed, again in ((on_one, on_one_again), (on_two, on_two_again)):
        assert resumed["digests"] == again["digests"]  # weights and Adam state, every rank
        assert comparable(resumed["rows"]) == comparable(again["rows"])
        assert [r["step"] for r in resumed["rows"]] == list(range(1, STEPS + 1))
        assert comparable(resumed["rows"][:2]) == comparable(written["rows"])  # logs kept
        assert sorted(resumed["ledger"]) == ids
        assert set(resumed["ledger"].values()) == {SampleState.TRAINED}
