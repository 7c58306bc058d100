"""LoRA (``model.lora``) on in-process roles, without Ray: an online learner rank that learns
with adapters only, rollout workers that receive adapters only and never touch their frozen
base, checkpoints of adapters only that resume exactly, the saved model (merged plain HF folder
plus adapter folder), the SFT stage with adapters, and the config's LoRA rules.

The model is the tiny GPT-2 made four times wider (256): big enough that adapters of rank 4 are
~2% of its weights, so "only adapters move" and "a checkpoint is small" are visible in bytes.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from inprocess import setup_learner, step_config
from preference_rows import good_beats_bad
from trained import assert_learns

from rayrlhf.config import ConfigError
from rayrlhf.engine import full_shapes
from rayrlhf.experience import PromptChunk
from rayrlhf.forward import response_logprobs
from rayrlhf.lora import (
    adapter_folder,
    adapter_tensors,
    adapters_disabled,
    is_adapter_name,
    load_adapter_tensors,
    merged_state_dict,
)
from rayrlhf.models import load_policy
from rayrlhf.preflight import check_before_start
from rayrlhf.roles.learner import Learner
from rayrlhf.roles.preference_reference import PreferenceReference
from rayrlhf.roles.reference import ReferenceWorker
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker
from rayrlhf.roles.supervised import SupervisedLearner
from rayrlhf.tasks.dpo import sequence_logprobs
from rayrlhf.tiny_models import save_tiny
from rayrlhf.weights.transport import flatten_params, unflatten_params

PROMPTS = ["the movie was very", "a film is", "the plot", "this story was", "the actor is"]
LORA = ("model.lora.rank=4", "model.lora.alpha=8")


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """The tiny GPT-2 at width 256 (1.6M parameters; rank-4 adapters on every linear: 33k)."""
    return save_tiny(tmp_path_factory.mktemp("wide") / "model", hidden=256)


def _config(model, prompts_file, *extra: str):
    # Adapters learn at a higher rate than full weights.
    return step_config(
        model, prompts_file, "learner.policy_lr=1e-2", "learner.value_lr=1e-2", *extra
    )


def _setup(config) -> Learner:
    return setup_learner(config)


def _step(learner: Learner, config, step: int, worker: RolloutWorker | None = None) -> dict:
    """One step: the learner's version synced into ``worker`` (a fresh one if None) as the
    controller does, its chunks generated, scored and given reference log-probs, trained."""
    worker = worker or RolloutWorker(config)
    if learner.policy_version:
        worker.load_weights(learner.policy_state_dict(), learner.policy_version)
    r, size = config.rollout, config.rollout.chunk_size
    rollouts = []
    for c in range(r.prompts_per_step // size):
        ids = [f"{step}-{c}.{i}" for i in range(size)]
        prompts = [PROMPTS[(c * size + i) % len(PROMPTS)] for i in range(size)]
        rollouts.append(worker.generate(PromptChunk(ids, prompts)))
    scores = [RewardWorker(config.reward, "cpu").score(x) for x in rollouts]
    reference = ReferenceWorker(config)
    return learner.train_step(rollouts, scores, [reference.logprobs(x) for x in rollouts])


def _base(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the base's tensors (all but the adapters) by their plain HF names."""
    return {
        n.removeprefix("base_model.model.").replace(".base_layer.", "."): p.detach().clone()
        for n, p in model.named_parameters()
        if not is_adapter_name(n)
    }


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (``torch.equal`` would call -0.0 and 0.0 equal)."""
    return a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


# ---- PPO with adapters: learning, what moves, the base, the saved model ---------------------


@pytest.fixture(scope="module")
def lora_run(wide_model, prompts_file) -> dict:
    """12 steps of LoRA PPO on one worker (reward = frequency of "good"), 32 samples a step:
    the config, the learner, every step's metrics and sync size, and a last chunk generated
    with the final version."""
    config = _config(
        wide_model,
        prompts_file,
        *LORA,
        "rollout.prompts_per_step=32",
        "rollout.chunk_size=8",
        "learner.minibatch_size=16",
        "learner.micro_batch_size=16",
        "learner.ppo_epochs=2",
        "online.kl_coef=0.01",
    )
    learner, worker = _setup(config), RolloutWorker(config)
    history, sizes = [], []
    for step in range(12):
        history.append(_step(learner, config, step, worker))
        sizes.append(learner.policy_state_dict().nbytes)
    worker.load_weights(learner.policy_state_dict(), learner.policy_version)
    last = worker.generate(PromptChunk(["last-0", "last-1"], PROMPTS[:2]))
    return {"config": config, "learner": learner, "history": history, "sizes": sizes, "last": last}


def test_lora_ppo_learns_with_only_adapters_moving(lora_run, wide_model):
    """The reward rises as in PPO's learning test; every sync moves the adapters' bytes and
    nothing else (2% of the model); the rollout generates with the learner's weights (fresh
    samples' log-probs agree to 1e-5); the learner's base is still the model folder's."""
    learner, history, sizes = lora_run["learner"], lora_run["history"], lora_run["sizes"]
    assert_learns(history)
    adapters = sum(p.numel() for _, p in adapter_tensors(learner.policy.module))
    full = sum(s.numel() for s in full_shapes(learner.policy))
    assert set(sizes) == {adapters * 4} and adapters < 0.03 * full, (sizes, full)
    mismatch = [m["rollout/logprob_mismatch"] for m in history]
    assert max(mismatch) < 1e-5, mismatch
    fresh = _base(load_policy(str(wide_model)))
    base = _base(learner.policy.module)
    assert base.keys() == fresh.keys()
    assert all(_bitwise_equal(t, fresh[n]) for n, t in base.items())


def test_adapters_disabled_inside_the_engine_give_the_reference(lora_run):
    """``adapters_disabled(engine.module)``: the trained policy computes the reference workers'
    log-probs (the initial policy's), and the adapters train again afterwards."""
    rollout, module = lora_run["last"], lora_run["learner"].policy.module
    ids, am, p = rollout.input_ids, rollout.attention_mask, rollout.prompt_ids.shape[1]
    ref = ReferenceWorker(lora_run["config"]).logprobs(rollout).logprobs
    with torch.no_grad():
        trained, _ = response_logprobs(module, ids, am, p)
        with adapters_disabled(module):
            disabled, _ = response_logprobs(module, ids, am, p)
    mask = rollout.response_mask.bool()
    assert (disabled - ref)[mask].abs().max() < 1e-6
    assert (trained - ref)[mask].abs().max() > 0.1  # the adapters matter
    assert all(p.requires_grad for _, p in adapter_tensors(module))


def test_saved_policy_is_merged_plain_hf_and_an_adapter_folder(lora_run, tmp_path):
    """The output folder loads with AutoModelForCausalLM alone and gives the adapter model's
    log-probs (1e-5); peft's adapter folder lies beside it and gives them too."""
    from peft import PeftModel  # the test reads the folder as a peft user would
    from transformers import AutoModelForCausalLM

    rollout, learner = lora_run["last"], lora_run["learner"]
    assert learner.save_policy(str(tmp_path / "model"))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert not any(is_adapter_name(n) for n, _ in plain.named_parameters())
    assert (tmp_path / "model" / "tokenizer.json").exists()
    adapter = adapter_folder(tmp_path / "model")
    assert adapter == tmp_path / "model_adapter"
    base = AutoModelForCausalLM.from_pretrained(learner.s.policy_path)
    peft_model = PeftModel.from_pretrained(base, str(adapter))
    ids, am, p = rollout.input_ids, rollout.attention_mask, rollout.prompt_ids.shape[1]
    mask = rollout.response_mask.bool()
    with torch.no_grad():
        want, _ = response_logprobs(learner.policy.module, ids, am, p)
        for model in (plain.eval(), peft_model.eval()):
            got, _ = response_logprobs(model, ids, am, p)
            assert (got - want)[mask].abs().max() < 1e-5


# ---- the frozen base through many syncs -----------------------------------------------------


def _random_adapters(layout: list[tuple[str, torch.Size]], seed: int, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(seed)
    tensors = [(n, torch.randn(s, generator=gen) * 0.05) for n, s in layout]
    return flatten_params(tensors, [s for _, s in layout], dtype)


def test_base_is_bit_identical_after_many_syncs(wide_model, prompts_file):
    """20 syncs of changing adapters: the HF worker's base and the vLLM path's pristine base
    (bf16, where a merge-unmerge in place would round) equal the originals bit for bit; the
    vLLM path's merged weights are base + s·B·A of the newest adapters only (after zero
    adapters: the base itself); a full state dict is refused rather than written to the base."""
    config = _config(wide_model, prompts_file, *LORA)
    worker = RolloutWorker(config)
    model = worker.engine.model
    before = _base(model)
    layout = worker.engine.named_shapes()
    assert all(is_adapter_name(n) for n, _ in layout)
    for v in range(1, 21):
        worker.load_weights(_random_adapters(layout, v, torch.float32), v)
        worker.generate(PromptChunk([f"s{v}"], PROMPTS[:1]))
    assert all(_bitwise_equal(t, before[n]) for n, t in _base(model).items())
    with pytest.raises(ValueError, match="adapter sync mismatch"):
        worker.engine.load_weights(dict(load_policy(str(wide_model)).named_parameters()))

    # The vLLM engine's merge path: its CPU copy of the base with adapters (bf16 here).
    adapted = load_policy(str(wide_model), "bf16", config.online_lora)
    pristine = {n: p.detach().clone() for n, p in adapted.named_parameters()}
    for v in range(1, 21):
        load_adapter_tensors(adapted, unflatten_params(_random_adapters(layout, v, torch.bfloat16)))
        merged = merged_state_dict(adapted)
    for name, param in adapted.named_parameters():
        if not is_adapter_name(name):
            assert _bitwise_equal(param, pristine[name]), name
    layer = "base_model.model.transformer.h.0.attn.c_attn"
    a, b = (adapted.get_parameter(f"{layer}.lora_{x}.default.weight").float() for x in "AB")
    expect = pristine[f"{layer}.base_layer.weight"].float() + (b @ a).T * 2.0  # s = 8 / 4
    assert torch.equal(merged["transformer.h.0.attn.c_attn.weight"], expect.bfloat16())
    for _, param in adapter_tensors(adapted):
        param.data.zero_()
    zero = merged_state_dict(adapted)
    original = _base(load_policy(str(wide_model), "bf16"))
    assert zero.keys() == original.keys()
    assert all(torch.equal(zero[n], t) for n, t in original.items())


# ---- checkpoints --------------------------------------------------------------------------------


def _folder_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_lora_checkpoint_holds_adapters_only_and_resumes_exactly(
    wide_model, prompts_file, tmp_path
):
    """A checkpoint after a step holds the adapters, the value head and their optimizer state:
    under 5% of full fine-tuning's. Resuming from it and stepping equals stepping straight on:
    parameters and optimizer state bit for bit, metrics row for row."""
    config = _config(wide_model, prompts_file, *LORA, "ppo.kl_controller=adaptive")
    first = _setup(config)
    _step(first, config, 0)
    first.save_checkpoint(str(tmp_path / "lora"))
    straight = _step(first, config, 1)
    second = _setup(config)
    second.load_checkpoint(str(tmp_path / "lora"))
    assert second.policy_version == 1
    resumed = _step(second, config, 1)
    assert first.state_digest() == second.state_digest()
    untimed = [
        {k: v for k, v in m.items() if not k.startswith(("time/", "perf/"))}
        for m in (straight, resumed)
    ]
    assert untimed[0] == untimed[1]

    full_config = _config(wide_model, prompts_file)
    full = _setup(full_config)
    _step(full, full_config, 0)
    full.save_checkpoint(str(tmp_path / "full"))
    lora_bytes, full_bytes = _folder_bytes(tmp_path / "lora"), _folder_bytes(tmp_path / "full")
    print(f"checkpoint bytes: LoRA {lora_bytes}, full {full_bytes}")
    assert lora_bytes < 0.05 * full_bytes, (lora_bytes, full_bytes)


# ---- SFT with adapters --------------------------------------------------------------------------


def test_sft_with_lora_trains_adapters_and_saves_merged(make_config, wide_model, tmp_path):
    """SFT with model.lora: the loss falls, the base stays as loaded, and the saved model is a
    plain HF folder (merged) with the adapter folder beside it. (The wide model: at width 64
    the frozen tied embeddings cap every logit near 1, and no adapter can make "good" likely.)"""
    rows = [{"prompt": " ".join(["bad"] * (3 + i % 4)), "response": " good"} for i in range(64)]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = make_config(
        f"model.policy={wide_model}",
        *LORA,
        f"sft.data.path={data}",
        "sft.lr=1e-2",
        "sft.epochs=4",
        "rollout.template=plain",
        "sft.learner.minibatch_size=8",
        "sft.heldout_fraction=0.25",
    )
    learner = SupervisedLearner(config, "sft", 0)
    learner.setup(*learner.rendezvous_address())
    before, base = learner.evaluate(), _base(learner.engine.module)
    for step in range(learner.total_steps):
        learner.train_step(step)
    assert learner.evaluate()["eval/loss"] < 0.3 * before["eval/loss"]
    assert all(_bitwise_equal(t, base[n]) for n, t in _base(learner.engine.module).items())
    assert learner.save(str(tmp_path / "model"))
    plain = load_policy(str(tmp_path / "model"))
    assert set(plain.state_dict()) == set(load_policy(str(wide_model)).state_dict())
    assert (adapter_folder(tmp_path / "model") / "adapter_config.json").exists()


def test_dpo_with_lora_learns_against_its_base_as_the_reference(make_config, wide_model, tmp_path):
    """DPO with model.lora: at step 0 the policy is its reference (loss ln 2: the adapters are
    zero), the adapters learn the preference, and the trained policy with its adapters
    disabled still gives the reference workers' log-probs (the base is the reference)."""
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in good_beats_bad(96, 1, filler=2)))
    config = make_config(
        f"model.policy={wide_model}",
        *LORA,
        f"dpo.data.path={train}",
        "dpo.heldout_fraction=0.25",
        f"dpo.reference_logprobs={tmp_path / 'ref'}",
        "dpo.lr=1e-2",
        "dpo.beta=0.5",
        "dpo.max_tokens=24",
        "dpo.max_prompt_tokens=12",
        "dpo.learner.minibatch_size=8",
    )
    PreferenceReference(config).logprobs(config.dpo.reference_logprobs, 0, 1)
    learner = SupervisedLearner(config, "dpo", 0)
    learner.setup(*learner.rendezvous_address())
    before = learner.evaluate()
    assert before["eval/loss"] == pytest.approx(math.log(2), abs=1e-4)
    for step in range(learner.total_steps):
        learner.train_step(step)
    assert learner.evaluate()["eval/loss"] < math.log(2) - 0.1
    pairs, module = learner.task.heldout[:4], learner.engine.module
    with torch.no_grad(), adapters_disabled(module):
        chosen = sequence_logprobs(
            module, [p.chosen for p in pairs], learner.task.tokenizer.pad_token_id
        )
    assert torch.allclose(chosen, torch.tensor([p.ref[0] for p in pairs]), atol=1e-4)


# ---- the config's rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("reference.mode=learner",), "reference.mode learner .* needs model.lora"),
        (
            ("reference.mode=learner", *LORA, "online.kl_coef=0"),
            "needs an algorithm that uses a reference",
        ),
        (("model.lora.dropout=0.1",), "model.lora.dropout 0.1 would never apply"),
    ],
)
def test_lora_config_mistakes_fail_at_load(make_config, extra, message):
    with pytest.raises(ConfigError, match=message):
        make_config(*extra)


def test_reference_in_learner_starts_no_reference_workers(make_config):
    config = make_config(*LORA, "reference.mode=learner")
    assert config.uses_reference and not config.reference_workers
    assert config.online_lora is not None
    assert make_config(*LORA, "sft.dropout=true", "model.lora.dropout=0.1", "sft.data.path=x")


def test_lora_targets_the_policy_lacks_fail_before_start(make_config):
    """peft would fail only when no target matches, and inside the learners: each is checked
    against the policy's module names (a meta-device model) before anything starts."""
    config = make_config(*LORA, "model.lora.target_modules=[c_attn,q_proj]")
    with pytest.raises(ConfigError, match="target_modules: q_proj not in"):
        check_before_start(config, online=True)
    check_before_start(make_config(*LORA, "model.lora.target_modules=[c_attn,mlp.c_proj]"), True)
