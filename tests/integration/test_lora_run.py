"""LoRA PPO through Ray: two learner ranks under ZeRO-3 that compute the reference themselves
(``reference.mode: learner``, so no reference actor starts), adapters broadcast to the rollout
workers, and the vLLM backend fed merged weights from its pristine base."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch

from rayrlhf.loops.online import OnlineTrainer
from rayrlhf.lora import adapter_folder, adapter_tensors, is_adapter_name
from rayrlhf.models import load_policy

pytestmark = pytest.mark.integration

LORA = ("model.lora.rank=4", "model.lora.alpha=8", "learner.policy_lr=1e-2")
SHORT = (
    "run.num_steps=3",
    "rollout.prompts_per_step=8",
    "rollout.chunk_size=4",
    "learner.minibatch_size=8",
    "learner.micro_batch_size=4",
)


def _adapter_bytes(trainer: OnlineTrainer) -> int:
    """The fp32 bytes of rank 0's policy adapters (what one sync should move; ZeRO-3 keeps
    a partitioned parameter's full size aside)."""
    count = ray.get(
        trainer.learners.actors[0].__ray_call__.remote(
            lambda s: sum(
                getattr(p, "ds_numel", p.numel()) for _, p in adapter_tensors(s.policy.module)
            )
        )
    )
    return 4 * count


def _actor_names(trainer: OnlineTrainer, role: str) -> list[str]:
    prefix = f"{trainer.config.run.name}-"
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix) and f"/{role}-" in a["name"]
    ]


def test_lora_ppo_with_reference_in_learner_moves_adapters_only(ray_local, make_config, tmp_path):
    """No reference actor; the KL is reported (the learner's own reference, adapters off);
    every broadcast moves the adapters' bytes; the rollout generates with the learners'
    weights; the saved policy is a plain HF folder with the adapter folder beside it."""
    cfg = make_config(
        *LORA,
        *SHORT,
        "reference.mode=learner",
        "weight_sync.method=broadcast",
        "learner.num_ranks=2",
        "learner.zero_stage=3",
    )
    trainer = OnlineTrainer(cfg, tmp_path / "run")
    try:
        assert _actor_names(trainer, "reference") == []
        adapters = _adapter_bytes(trainer)
        history = trainer.run()
        trainer.save_policy(tmp_path / "model")
    finally:
        trainer.shutdown()
    assert [m["sync/bytes"] for m in history] == [adapters] * 3
    assert all(m["rollout/logprob_mismatch"] < 1e-5 for m in history), history
    assert (adapter_folder(tmp_path / "model") / "adapter_config.json").exists()
    names = {n for n, _ in load_policy(str(tmp_path / "model")).named_parameters()}
    assert names and not any(is_adapter_name(n) for n in names)
    # The learner's own reference (adapters disabled): at step 0 the adapters are zero, so the
    # policy is its reference exactly; later it has moved away.
    assert all("kl/mean" in m for m in history), history
    assert abs(history[0]["kl/mean"]) < 1e-6 < abs(history[-1]["kl/mean"]), history


def test_vllm_rollout_gets_adapters_merged_from_a_pristine_base(
    ray_local, make_config, tiny_vllm_model, tmp_path
):
    """The vLLM engine receives adapters (object store) and loads base + s·B·A computed from
    its untouched CPU copy of the base: the learner's log-probs match vLLM's samples after
    every update, and after the run that copy is still the model folder's, bit for bit."""
    pytest.importorskip("vllm", reason="vLLM not installed: bash launch/setup.sh --vllm")
    cfg = make_config(f"model.policy={tiny_vllm_model}", "rollout.backend=vllm", *LORA, *SHORT)
    trainer = OnlineTrainer(cfg, tmp_path / "run")
    try:
        adapters = _adapter_bytes(trainer)
        history = trainer.run()
        worker = trainer.rollout.actors[0]
        base = ray.get(
            worker.__ray_call__.remote(
                lambda s: {
                    n: p.detach().clone()
                    for n, p in s.engine.adapted.named_parameters()
                    if not is_adapter_name(n)
                }
            )
        )
    finally:
        trainer.shutdown()
    assert all(m["rollout/logprob_mismatch"] < 1e-5 for m in history), history
    assert history[-1]["policy_version"] == 3
    # Object-store size: the flat adapters plus a small index.
    assert all(adapters <= m["sync/bytes"] < adapters + 2**16 for m in history), adapters
    original = dict(
        load_policy(str(Path(tiny_vllm_model)), "fp32", cfg.model.lora).named_parameters()
    )
    for name, tensor in base.items():
        assert torch.equal(tensor.view(torch.uint8), original[name].detach().view(torch.uint8))
