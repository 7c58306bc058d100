"""The rollout and reward workers' guards against bugs that once passed the whole suite silently
(no Ray; roles built in-process):

- the rollout mask dropping the EOS when pad == EOS (a ``!= pad`` mask),
- tensor / numpy reward scores skipping the finiteness and count checks,
- ``RolloutWorker.load_weights`` loading nothing (or into a copy) yet reporting the new version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rayrlhf.config import Config, RewardConfig, load
from rayrlhf.experience import PromptChunk, Rollout
from rayrlhf.forward import response_logprobs
from rayrlhf.models import load_policy, load_tokenizer
from rayrlhf.roles.reward import RewardError, RewardWorker, validate_scores
from rayrlhf.roles.rollout import RolloutWorker
from rayrlhf.weights.transport import FlatWeights, flatten_params

CHUNK = PromptChunk(
    [f"0-{i}" for i in range(6)],
    ["the movie was very", "a film", "the plot is not", "good", "bad story", "the actor is"],
)
MAX_NEW = 16


def _config(policy: Path, prompts_file: Path, *extra: str) -> Config:
    return load(
        None,
        [
            f"model.policy={policy}",
            f"data.prompts={prompts_file}",
            "reward.function=rayrlhf.rewards.rules:target_word_frequency",
            f"rollout.max_new_tokens={MAX_NEW}",
            *extra,
        ],
    )


# ---- (a) the EOS that ends a response is inside the mask --------------------------------------


@pytest.fixture(scope="module")
def eos_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with EOS made likely (about 1 in 5 per step instead of 1 in 34).

    GPT-2 ties its output projection to the input embedding, so the EOS row is left alone and the
    final layer norm's bias is shifted along it instead: every logit gets ``bias · wte[v]``, which
    is +2 for EOS and a small random amount for the other tokens.
    """
    model = load_policy(str(tiny_model))
    eos = load_tokenizer(str(tiny_model)).eos_token_id
    assert model.get_output_embeddings().weight is model.transformer.wte.weight
    with torch.no_grad():
        row = model.transformer.wte.weight[eos]
        model.transformer.ln_f.bias.add_(2.0 * row / row.dot(row))
    path = tmp_path_factory.mktemp("eos") / "model"
    model.save_pretrained(path)
    load_tokenizer(str(tiny_model)).save_pretrained(path)
    return path


def test_rollout_mask_keeps_the_eos_that_ended_each_row(eos_model, prompts_file):
    """Catches a rollout mask built as ``response_ids != pad`` (pad == EOS hides the EOS)."""
    worker = RolloutWorker(_config(eos_model, prompts_file, "rollout.temperature=1.0"))
    tok = worker.tokenizer
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos  # the trap
    ro = worker.generate(CHUNK)
    width = ro.response_ids.shape[1]
    ended_early = 0
    for row in range(len(CHUNK.prompts)):
        ids, mask, lp = ro.response_ids[row], ro.response_mask[row], ro.logprobs[row]
        hits = (ids == eos).nonzero().flatten()
        if len(hits) == 0:
            assert width == MAX_NEW and (mask == 1).all(), "a row cut at the limit is all ones"
            continue
        k = int(hits[0])
        if k < width - 1:
            ended_early += 1
        assert (mask[: k + 1] == 1).all(), f"row {row}: the EOS at {k} must be inside the mask"
        assert (mask[k + 1 :] == 0).all(), f"row {row}: padding after the EOS must be outside"
        assert lp[k] < 0, f"row {row}: the EOS must carry its behaviour log-prob"
        assert (lp[: k + 1] < 0).all() and (lp[k + 1 :] == 0).all()
    # Not vacuous: several rows stopped on an EOS with padding after it, before the limit.
    assert ended_early >= 2, ro.response_ids
    # The EOS log-probs are the policy's: a forward pass over the masked layout agrees.
    forward, _ = response_logprobs(
        worker.engine.model, ro.input_ids, ro.attention_mask, ro.prompt_ids.shape[1], 1.0
    )
    assert ((forward - ro.logprobs) * ro.response_mask).abs().max() < 1e-4


# ---- (b) tensor and numpy scores get the same checks as a list --------------------------------

SAMPLES = ["s0", "s1", "s2"]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (torch.tensor([1.0, float("inf"), 0.0]), "non-finite score .* for sample 's1'"),
        (torch.tensor([float("nan"), 1.0, 0.0]), "non-finite score .* for sample 's0'"),
        (torch.tensor([[1.0], [2.0], [3.0]]), r"shape \(3, 1\)"),
        (torch.tensor([1.0, 2.0]), "2 scores for 3 samples"),
        (torch.tensor([1.0, 2.0, 3.0, 4.0]), "4 scores for 3 samples"),
        # Today any ndarray is refused as "not a list of floats", so no message is pinned down.
        (np.array([1.0, float("nan"), 0.0]), None),
        (np.array([1.0, 2.0, float("inf")]), None),
    ],
    ids=["t-inf", "t-nan", "t-B1", "t-short", "t-long", "np-nan", "np-inf"],
)
def test_validate_scores_checks_tensors_and_arrays(raw, match):
    """Catches a tensor/array fast path in validate_scores that skips finiteness or count checks."""
    with pytest.raises(RewardError, match=match):
        validate_scores(raw, SAMPLES, "reward function f")


def test_validate_scores_accepts_a_good_tensor():
    """The tensor path still works for well-formed scores: (B,) float32, same values."""
    out = validate_scores(torch.tensor([1.5, -2.0, 0.0], dtype=torch.float64), SAMPLES, "f")
    assert out.dtype == torch.float32 and out.tolist() == [1.5, -2.0, 0.0]


def tensor_with_inf(prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.tensor([1.0, float("inf"), 0.0])


def tensor_with_nan(prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.tensor([0.0, 1.0, float("nan")])


def numpy_with_nan(prompts: list[str], responses: list[str]) -> np.ndarray:
    return np.array([1.0, float("nan"), 0.0])


def tensor_column(prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.ones(len(prompts), 1)


def tensor_too_short(prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.ones(len(prompts) - 1)


def tensor_good(prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.arange(len(prompts), dtype=torch.float32)


def _fake_rollout() -> Rollout:
    z = torch.zeros(3, 2, dtype=torch.long)
    return Rollout(
        sample_ids=list(SAMPLES),
        policy_version=0,
        prompt_ids=z,
        prompt_mask=z + 1,
        response_ids=z,
        response_mask=z + 1,
        logprobs=torch.zeros(3, 2),
        prompts=["a", "b", "c"],
        responses=["x", "y", "z"],
    )


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        ("tensor_with_inf", "non-finite score .* for sample 's1'"),
        ("tensor_with_nan", "non-finite score .* for sample 's2'"),
        ("numpy_with_nan", None),
        ("tensor_column", r"shape \(3, 1\)"),
        ("tensor_too_short", "2 scores for 3 samples"),
    ],
    ids=["t-inf", "t-nan", "np-nan", "t-B1", "t-short"],
)
def test_reward_worker_rejects_bad_tensor_scores(fn, match):
    """Catches the same tensor fast path, through RewardWorker.score and a named function."""
    worker = RewardWorker(RewardConfig(function=f"{__name__}:{fn}"))
    assert worker.score_fn is globals()[fn]  # the function named in the config is the one used
    with pytest.raises(RewardError, match=match):
        worker.score(_fake_rollout())


def test_reward_worker_accepts_good_tensor_scores():
    """A well-formed tensor from a reward function becomes the (B,) float32 rewards."""
    scores = RewardWorker(RewardConfig(function=f"{__name__}:tensor_good")).score(_fake_rollout())
    assert scores.sample_ids == SAMPLES and scores.rewards.tolist() == [0.0, 1.0, 2.0]


# ---- (c) load_weights loads every weight or fails; never a silent new version -----------------


@pytest.fixture
def worker(tiny_model, prompts_file) -> RolloutWorker:
    return RolloutWorker(_config(tiny_model, prompts_file, "rollout.temperature=0.7"))


def _random_weights(tiny_model: Path) -> dict[str, torch.Tensor]:
    """New values for every parameter (named_parameters: the tied head appears once)."""
    gen = torch.Generator().manual_seed(1234)
    return {
        n: torch.randn(p.shape, generator=gen) * 0.2
        for n, p in load_policy(str(tiny_model)).named_parameters()
    }


def _as(kind: str, weights: dict[str, torch.Tensor]) -> FlatWeights | dict[str, torch.Tensor]:
    if kind == "dict":
        return weights
    # The trainer's path: Learner.policy_state_dict flattens the gathered parameters.
    return flatten_params(iter(weights.items()), [t.shape for t in weights.values()], torch.float32)


@pytest.mark.parametrize("kind", ["flat", "dict"])
def test_load_weights_puts_every_value_in_the_model_used_to_generate(worker, tiny_model, kind):
    """Catches load_weights loading nothing, loading into a copy or breaking the tied head."""
    weights = _random_weights(tiny_model)
    before = {n: p.detach().clone() for n, p in worker.engine.model.named_parameters()}
    assert all(not torch.equal(before[n], w) for n, w in weights.items())
    assert worker.load_weights(_as(kind, weights), 5) == 5
    assert worker.get_policy_version() == 5
    model = worker.engine.model
    params = dict(model.named_parameters())
    assert set(params) == set(weights)
    for name, param in params.items():
        assert torch.equal(param.detach(), weights[name]), name
    # Tied weights included: the output projection is the new embedding, still shared.
    head = model.get_output_embeddings().weight
    assert torch.equal(head.detach(), weights["transformer.wte.weight"])
    assert head is model.transformer.wte.weight
    for name, tensor in model.state_dict().items():
        src = weights.get(name, weights["transformer.wte.weight"])
        assert torch.equal(tensor, src), name

    # Generation samples with those weights: behaviour log-probs match an independent model.
    ro = worker.generate(PromptChunk(["7-0", "7-1"], ["the movie was very", "a film"]))
    assert ro.policy_version == 5
    ref = load_policy(str(tiny_model))
    result = ref.load_state_dict(weights, strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys
    assert torch.equal(ref.lm_head.weight, weights["transformer.wte.weight"])
    ref_lp, _ = response_logprobs(ref, ro.input_ids, ro.attention_mask, ro.prompt_ids.shape[1], 0.7)
    old = load_policy(str(tiny_model))
    old_lp, _ = response_logprobs(old, ro.input_ids, ro.attention_mask, ro.prompt_ids.shape[1], 0.7)
    mask = ro.response_mask.bool()
    assert (ref_lp - ro.logprobs)[mask].abs().max() < 1e-4
    assert (old_lp - ro.logprobs)[mask].abs().max() > 1e-2  # the old weights would not match


@pytest.mark.parametrize("kind", ["flat", "dict"])
@pytest.mark.parametrize("rename", ["all", "one"])
def test_load_weights_with_renamed_keys_raises_and_keeps_the_version(
    worker, tiny_model, kind, rename
):
    """Catches load_weights ignoring unmatched names (strict=False) and reporting the version."""
    weights = _random_weights(tiny_model)
    if rename == "all":
        weights = {"model." + n.removeprefix("transformer."): w for n, w in weights.items()}
    else:
        name = "transformer.h.1.mlp.c_fc.weight"
        weights["transformer.h.1.mlp.fc_in.weight"] = weights.pop(name)
    before = {n: p.detach().clone() for n, p in worker.engine.model.named_parameters()}
    with pytest.raises(ValueError, match="weight sync mismatch"):
        worker.load_weights(_as(kind, weights), 5)
    assert worker.get_policy_version() == 0
    assert all(torch.equal(p, before[n]) for n, p in worker.engine.model.named_parameters())
