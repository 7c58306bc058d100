"""The HF rollout's sampler (rayrlhf.generation.sampling): draws follow the distribution, the
nucleus cut keeps the right tokens, and the recorded log-probs are the uncut ones."""

import torch

from rayrlhf.generation.sampling import InverseCdfSampler, draw, nucleus


def test_draws_follow_the_distribution_and_skip_zero_weights():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2]]).repeat(20_000, 1)
    tokens = draw(probs, torch.Generator().manual_seed(0)).squeeze(-1)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert freq[1] == 0
    assert torch.allclose(freq, probs[0], atol=0.015), freq


def test_draws_are_seeded():
    probs = torch.softmax(torch.randn(8, 50), -1)
    a = draw(probs, torch.Generator().manual_seed(3))
    b = draw(probs, torch.Generator().manual_seed(3))
    c = draw(probs, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([[0.1, 0.4, 0.3, 0.2]])
    assert torch.equal(nucleus(probs, 0.6) > 0, torch.tensor([[False, True, True, False]]))
    assert torch.equal(nucleus(probs, 0.7) > 0, torch.tensor([[False, True, True, False]]))
    assert torch.equal(nucleus(probs, 0.71) > 0, torch.tensor([[False, True, True, True]]))
    assert torch.equal(nucleus(probs, 0.05) > 0, torch.tensor([[False, True, False, False]]))


def test_sampler_returns_one_hot_scores_and_uncut_logprobs():
    scores = torch.randn(5, 30)
    sampler = InverseCdfSampler(0.7, 0.5, torch.Generator().manual_seed(0))
    out = sampler(torch.zeros(5, 2, dtype=torch.long), scores)
    token = out.argmax(-1)
    assert torch.equal((out == 0).sum(-1), torch.ones(5, dtype=torch.long))
    expected = torch.log_softmax(scores / 0.7, -1).gather(-1, token[:, None]).squeeze(-1)
    assert torch.allclose(sampler.logprobs()[:, 0], expected, atol=1e-6)
    # every drawn token lies in its row's nucleus
    kept = nucleus(torch.softmax(scores / 0.7, -1), 0.5) > 0
    assert kept.gather(-1, token[:, None]).all()
