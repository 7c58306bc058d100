"""The ILQL policy folder and ILQL decoding with the KV cache, on the tiny model (no Ray)."""

from __future__ import annotations

import torch

from rayrlhf.ilql_model import ILQLHeads, ILQLPolicy, ilql_sample, is_ilql_folder, load_ilql
from rayrlhf.models import load_policy, load_tokenizer


def _policy(tiny_model) -> ILQLPolicy:
    base = load_policy(str(tiny_model)).eval()
    torch.manual_seed(0)
    return ILQLPolicy(base, ILQLHeads(base.config.hidden_size, base.config.vocab_size))


def _prompts(tok):
    rows = [tok("the movie was very")["input_ids"], tok("a film")["input_ids"]]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def test_policy_and_heads_load_back_from_one_folder(tiny_model, tmp_path):
    policy = _policy(tiny_model)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            policy.heads.q.parameters(), policy.heads.target_q.parameters(), strict=True
        )
    )
    policy.decoding = {"beta": 1.0, "top_k": 5}
    policy.save_pretrained(tmp_path / "ilql")
    loaded, meta = load_ilql(tmp_path / "ilql")
    assert is_ilql_folder(tmp_path / "ilql") and not is_ilql_folder(tiny_model)
    assert meta["beta"] == 1.0 and meta["top_k"] == 5
    for (name, a), b in zip(
        policy.heads.state_dict().items(), loaded.heads.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    ids = torch.tensor([[1, 2, 3]])
    out, again = policy(ids, torch.ones_like(ids)), loaded(ids, torch.ones_like(ids))
    assert torch.allclose(out[0], again[0]) and torch.allclose(out[3], again[3])


def _sample(policy, tok, beta, seed=0, n=1):
    ids, mask = _prompts(tok)
    gen = torch.Generator().manual_seed(seed)
    return ilql_sample(
        policy,
        ids.repeat(n, 1),
        mask.repeat(n, 1),
        max_new_tokens=6,
        beta=beta,
        top_k=0,
        temperature=0.8,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        generator=gen,
    )


def test_beta_0_samples_the_policy_itself(tiny_model):
    """With the KV cache and left padding, each sampled token's log-prob is the policy's own
    log-softmax(logits / T), recomputed over the whole sequence without a cache."""
    tok = load_tokenizer(str(tiny_model))
    policy = _policy(tiny_model)
    tokens, logprobs = _sample(policy, tok, beta=0.0)
    ids, mask = _prompts(tok)
    full = torch.cat([ids, tokens], 1)
    full_mask = torch.cat([mask, torch.ones_like(tokens)], 1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = policy.base(
            input_ids=full, attention_mask=full_mask, position_ids=positions
        ).logits
    p = ids.shape[1]
    expected = (logits[:, p - 1 : -1] / 0.8).log_softmax(-1).gather(-1, tokens.unsqueeze(-1))
    live = logprobs != 0
    assert torch.allclose(logprobs[live], expected.squeeze(-1)[live], atol=1e-5)


def test_beta_moves_samples_toward_the_high_q_token(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    policy = _policy(tiny_model)
    good = tok("good")["input_ids"][0]
    with torch.no_grad():  # target Q: +3 on "good", 0 elsewhere; V: 0
        for head in [*policy.heads.target_q, policy.heads.v]:
            head[-1].weight.zero_()
            head[-1].bias.zero_()
        for head in policy.heads.target_q:
            head[-1].bias[good] = 3.0

    def rate(beta):
        tokens, _ = _sample(policy, tok, beta, seed=1, n=32)
        return (tokens == good).float().mean().item()

    assert rate(2.0) > 3 * rate(0.0) + 0.1


def test_nucleus_keeps_the_smallest_set_holding_top_p():
    from rayrlhf.ilql_model import nucleus

    logp = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.allclose(nucleus(logp, 0.7).exp(), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(nucleus(logp, 1e-9).exp(), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
