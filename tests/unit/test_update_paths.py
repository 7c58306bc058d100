"""The update paths that single-line slips break silently, checked against hand computations.

Each test drives a public entry point (the in-process :class:`Learner`, or DPO's
``sequence_logprobs``) on a tiny random model and compares what it reports with log-probs worked
out here by a plain forward of each row alone, so a swapped argument, a flipped sign or a mask
one token off shows as a wrong number rather than as a run that merely learns a little worse:

- decoupled PPO's behaviour weight on stale samples is π_prox / π_behaviour, not its inverse;
- GRPO's KL term is added to the loss (the policy moves toward its reference, not away);
- DPO's sequence log-prob sums exactly the response tokens, alone or padded in a batch.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from inprocess import step_config
from torch import Tensor

from rayrlhf.config import Config
from rayrlhf.data.encode import SFTExample
from rayrlhf.experience import PromptChunk, Rollout, Scores
from rayrlhf.models import load_policy, load_tokenizer
from rayrlhf.roles.learner import Learner
from rayrlhf.roles.reference import ReferenceWorker
from rayrlhf.roles.rollout import RolloutWorker
from rayrlhf.tasks.dpo import sequence_logprobs
from rayrlhf.tiny_models import save_tiny

PROMPTS = ["the movie was very", "a film is", "the plot", "this story was"]


def _config(policy: Path, prompts_file: Path, *extra: str) -> Config:
    """One step of four samples in one chunk, one minibatch and one micro-batch: every
    per-micro-batch metric is then the whole batch's."""
    return step_config(
        policy, prompts_file, "learner.micro_batch_size=4", "learner.ppo_epochs=1", *extra
    )


def _learner(config: Config) -> Learner:
    learner = Learner(config, 0)
    learner.setup(*learner.rendezvous_address())
    return learner


def _chunk(config: Config, step: int) -> PromptChunk:
    """Step ``step``'s four samples: four prompts, or two prompts twice with groups of two."""
    g = config.rollout.group_size
    prompts = [p for p in PROMPTS[: len(PROMPTS) // g] for _ in range(g)]
    return PromptChunk([f"{step}-{i}" for i in range(len(prompts))], prompts, group_size=g)


def _fresh_rollout(config: Config, learner: Learner, step: int) -> Rollout:
    """A chunk generated with the learner's current weights (staleness 0)."""
    worker = RolloutWorker(config)
    if learner.policy_version:
        worker.load_weights(learner.policy_state_dict(), learner.policy_version)
    return worker.generate(_chunk(config, step))


def _scores(rollout: Rollout, values: list[float]) -> Scores:
    return Scores(list(rollout.sample_ids), torch.tensor(values, dtype=torch.float32))


def _plain_model(path: Path) -> torch.nn.Module:
    """The causal LM at ``path`` in eval mode (dropout off, as the learner trains)."""
    return load_policy(str(path), "fp32").eval()


def _learner_model(learner: Learner, path: Path) -> torch.nn.Module:
    """The learner's current policy, saved as a model folder and loaded back."""
    assert learner.save_policy(str(path))
    return _plain_model(path)


def _hand_logprobs(model: torch.nn.Module, rollout: Rollout) -> list[Tensor]:
    """Per row, the log-probs of its response tokens: each row forwarded alone, unpadded, at
    temperature 1 (the tests sample at 1), the token at j predicted by the logits at j - 1."""
    rows = []
    for i in range(len(rollout)):
        prompt = rollout.prompt_ids[i][rollout.prompt_mask[i].bool()]
        response = rollout.response_ids[i][rollout.response_mask[i].bool()]
        ids = torch.cat([prompt, response])
        logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1].float()
        logprobs = torch.log_softmax(logits, -1).gather(-1, ids[1:, None])[:, 0]
        rows.append(logprobs[-len(response) :])
    return rows


def _padded(rows: list[Tensor], width: int) -> Tensor:
    """(B, width) right-padded with zeros, the rollout's layout of per-token values."""
    return torch.stack([torch.nn.functional.pad(r, (0, width - len(r))) for r in rows])


def test_stale_samples_are_weighted_by_proximal_over_behaviour(tiny_model, prompts_file, tmp_path):
    """Samples of version 0 trained at learner version 1 (max_staleness 1): the decoupled
    weight of each token is min(π_prox / π_behaviour, cap), π_prox the learner's weights at the
    step's start. The behaviour log-probs are moved by a known amount per row (one row past the
    cap) so that the weight and its inverse are far apart."""
    config = _config(tiny_model, prompts_file, "rollout.max_staleness=1", "online.kl_coef=0")
    learner = _learner(config)
    version0 = RolloutWorker(config)
    first = version0.generate(_chunk(config, 0))
    learner.train_step([first], [_scores(first, [0.0, 1.0, 0.5, 0.25])], [None])
    assert learner.policy_version == 1

    stale = version0.generate(_chunk(config, 1))  # one version behind the learner
    assert stale.policy_version == 0
    mask = stale.response_mask.float()
    shift = torch.tensor([[-0.7], [0.3], [1.0], [2.5]])  # log π_prox - log π_b grows by this
    stale = dataclasses.replace(stale, logprobs=(stale.logprobs - shift) * mask)
    with torch.no_grad():
        v1 = _learner_model(learner, tmp_path / "v1")
        proximal = _padded(_hand_logprobs(v1, stale), mask.shape[1])

    metrics = learner.train_step([stale], [_scores(stale, [1.0, 0.0, 0.25, 0.5])], [None])

    cap = config.algorithm.behaviour_weight_cap
    log_w = (proximal - stale.logprobs)[mask.bool()]
    # No token sits near the cap, so the truncated fraction below does not hinge on rounding.
    assert (log_w - math.log(cap)).abs().min() > 0.05
    expected = log_w.exp().clamp(max=cap).mean().item()
    inverted = (-log_w).exp().clamp(max=cap).mean().item()
    assert abs(expected - inverted) > 0.5  # the check below tells the two apart
    assert metrics["staleness/1"] == 4
    assert metrics["off_policy/weight_mean"] == pytest.approx(expected, rel=1e-4), (
        f"weight mean {metrics['off_policy/weight_mean']}: expected π_prox/π_b = {expected} "
        f"(the inverse would be {inverted})"
    )
    truncated = (log_w >= math.log(cap)).float().mean().item()
    assert metrics["off_policy/truncated_fraction"] == pytest.approx(truncated, abs=1e-6)


def _grpo_kl(rows: list[Tensor], ref: Tensor) -> Tensor:
    """GRPO's KL loss by hand: k3 = e^(ref - logp) - 1 - (ref - logp) per token, a mean over
    each response's tokens, then over rows (the per-sequence mean)."""
    per_row = []
    for i, logprobs in enumerate(rows):
        r = ref[i, : len(logprobs)] - logprobs
        per_row.append((torch.expm1(r) - r).mean())
    return torch.stack(per_row).mean()


def test_grpo_kl_term_is_added_and_pulls_the_policy_to_its_reference(
    tiny_model, prompts_file, tmp_path
):
    """With every reward equal, GRPO's advantages are 0 and the KL term alone moves the policy.
    Its reference is another random model, so the KL starts away from 0. The step's gradient is
    kl_coef times the hand KL's gradient, its KL metric the hand KL, and the update lowers the
    KL of the batch it trained on (a subtracted term would raise it). Trained again on the same
    samples (stale by one more version each step), the KL keeps falling."""
    kl_coef = 2.0
    grpo = ["algorithm.name=grpo", "rollout.group_size=2", "rollout.prompts_per_step=2"]
    extra = [*grpo, "rollout.chunk_size=2", "rollout.max_staleness=3"]
    config = _config(tiny_model, prompts_file, *extra, f"online.kl_coef={kl_coef}")
    reference = ReferenceWorker(_config(save_tiny(tmp_path / "reference", seed=1), prompts_file))
    learner = _learner(config)

    rollout = RolloutWorker(config).generate(_chunk(config, 0))
    ref = reference.logprobs(rollout)
    scores = _scores(rollout, [0.5] * 4)
    start = _plain_model(tiny_model)
    kl = _grpo_kl(_hand_logprobs(start, rollout), ref.logprobs)
    kl.backward()
    kl_before = kl.item()
    grads = [p.grad for p in start.parameters() if p.grad is not None]
    kl_grad_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()

    metrics = learner.train_step([rollout], [scores], [ref])
    assert metrics["loss/policy"] == pytest.approx(0.0, abs=1e-7)  # no advantage anywhere
    assert metrics["loss/kl"] == pytest.approx(kl_before, rel=1e-5)
    # The loss's only gradient is kl_coef times the KL's (the norm is DeepSpeed's, unclipped).
    assert metrics["policy/grad_norm"] == pytest.approx(kl_coef * kl_grad_norm, rel=1e-4)
    with torch.no_grad():
        moved = _learner_model(learner, tmp_path / "v1")
        kl_after = _grpo_kl(_hand_logprobs(moved, rollout), ref.logprobs).item()
    assert kl_after < kl_before * 0.9, (
        f"the KL to the reference went from {kl_before:.5f} to {kl_after:.5f} in a "
        "step whose only gradient is the KL term's: the term must be added to the loss"
    )

    kls = [metrics["loss/kl"]]
    for _ in range(3):  # the same samples, now 1, 2, 3 versions old
        kls.append(learner.train_step([rollout], [scores], [ref])["loss/kl"])
    assert kls[1] == pytest.approx(kl_after, rel=1e-4)  # the next step starts where this ended
    assert all(b < a for a, b in zip(kls, kls[1:], strict=False)), kls


def _hand_sequence_logprob(model: torch.nn.Module, example: SFTExample) -> float:
    """The example alone: the summed log-probs of ids[prompt_len:], each predicted by the
    logits one position before it."""
    ids = torch.tensor(example.ids)
    logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, -1).gather(-1, ids[1:, None])[:, 0]
    return logprobs[example.prompt_len - 1 :].sum().item()


def test_dpo_sequence_logprobs_sum_the_response_tokens_alone_and_padded(tiny_model):
    """Examples of different prompt and response lengths (one a single response token, one a
    single prompt token): each one's value is the hand sum of its response tokens, alone,
    right-padded in a batch with the others, and packed with them in one row."""
    model = _plain_model(tiny_model)
    tokenizer = load_tokenizer(str(tiny_model))
    pad = tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(0)
    vocab = [i for i in range(len(tokenizer)) if i != pad]
    shapes = [(3, 5), (6, 1), (1, 9), (4, 2)]  # (prompt tokens, response tokens)
    examples = []
    for row, (prompt_len, response_len) in enumerate(shapes):
        picks = torch.randint(len(vocab), (prompt_len + response_len,), generator=gen)
        examples.append(SFTExample([vocab[i] for i in picks.tolist()], prompt_len, row))
    with torch.no_grad():
        hand = torch.tensor([_hand_sequence_logprob(model, e) for e in examples])
        alone = torch.cat([sequence_logprobs(model, [e], pad) for e in examples])
        batched = sequence_logprobs(model, examples, pad)
        packed = sequence_logprobs(model, examples, pad, packed=True)  # one row, no padding
    torch.testing.assert_close(alone, hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched, hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed, hand, rtol=1e-5, atol=1e-5)
