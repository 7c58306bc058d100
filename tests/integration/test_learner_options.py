"""Learner options that GPU runs use (offload, bf16), trained on CPU through the same code."""

from __future__ import annotations

import pytest

from rayrlhf.loops.online import OnlineTrainer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "variant",
    [
        # How a 20B policy trains on GPUs: ZeRO-3, parameters and optimizer offloaded, and
        # activations recomputed (the recompute gathers the partitioned parameters again).
        (
            "learner.zero_stage=3",
            "learner.offload_optimizer=true",
            "learner.offload_params=true",
            "learner.gradient_checkpointing=true",
        ),
        ("learner.zero_stage=2", "learner.precision=bf16"),
    ],
    ids=["zero3-offload-checkpointing", "bf16"],
)
def test_offload_and_bf16_learner_paths(ray_local, make_config, tmp_path, variant):
    """The GPU-scale options (CPU offload of params and optimizer states, bf16) train on CPU."""
    cfg = make_config("run.num_steps=2", "rollout.prompts_per_step=8", *variant)
    trainer = OnlineTrainer(cfg, tmp_path / "run")
    try:
        history = trainer.run()
    finally:
        trainer.shutdown()
    assert [m["policy_version"] for m in history] == [1, 2]
    assert all(m["loss/value"] > 0 for m in history)
    # Weights reached the rollout worker: learner and behaviour log-probs agree (bf16 rounding).
    assert history[-1]["rollout/logprob_mismatch"] < 1e-2
