"""Packed forward passes equal padded ones; token-budget micro-batches change no update; the
FLOP count is the architecture's."""

from __future__ import annotations

import pytest
import torch

from rayrlhf.forward import pack_rows, response_logprobs, response_values
from rayrlhf.micro_batches import fixed_rows, micro_batch_count, row_costs, split_rows
from rayrlhf.models import disable_dropout, load_policy, load_value_model
from rayrlhf.perf import FlopCounter, forward_flops, matmul_params
from rayrlhf.tiny_models import save_tiny, save_tiny_llama


def _layout(seed: int = 0, rows: int = 5, vocab: int = 30) -> tuple[torch.Tensor, ...]:
    """(B, P+R) ids and mask: left-padded prompts of 1-6 tokens, right-padded responses of 1-7."""
    gen = torch.Generator().manual_seed(seed)
    p_len = torch.randint(1, 7, (rows,), generator=gen)
    r_len = torch.randint(1, 8, (rows,), generator=gen)
    p, r = int(p_len.max()), int(r_len.max())
    pm = (torch.arange(p)[None] >= p - p_len[:, None]).long()
    rm = (torch.arange(r)[None] < r_len[:, None]).long()
    ids = torch.randint(3, vocab, (rows, p + r), generator=gen) * torch.cat([pm, rm], 1)
    return ids, torch.cat([pm, rm], 1), p


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_dir(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    return save_tiny(root / "m") if request.param == "gpt2" else save_tiny_llama(root / "m")


def test_pack_rows_keeps_each_rows_real_tokens_and_restarts_positions():
    ids, am, p = _layout()
    rows = pack_rows(ids, am, p)
    assert rows.input_ids.shape[1] == int(am.sum())
    lengths = am.sum(-1).tolist()
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    assert all(int(rows.position_ids[0, s]) == 0 for s in starts)
    assert rows.labels.tolist() == ids[:, p:][am[:, p:].bool()].tolist()
    # Each predictor is the token just before its label, in the same row.
    assert rows.input_ids[0, rows.predictors + 1].tolist() == rows.labels.tolist()


def test_packed_logprobs_values_and_gradients_equal_padded(model_dir):
    torch.manual_seed(0)
    policy = disable_dropout(load_policy(str(model_dir))).train()
    value = disable_dropout(load_value_model(str(model_dir))).train()
    ids, am, p = _layout(seed=1)
    mask = am[:, p:].float()
    out = {}
    for packed in (False, True):
        policy.zero_grad()
        lp, ent = response_logprobs(policy, ids, am, p, 0.7, with_entropy=True, packed=packed)
        (lp * mask).sum().backward()
        grads = [q.grad.clone() for q in policy.parameters() if q.grad is not None]
        with torch.no_grad():
            v = response_values(value, ids, am, p, packed)
        out[packed] = (lp.detach(), ent, v, grads)
    for a, b in zip(out[False][:3], out[True][:3], strict=True):
        torch.testing.assert_close(a * mask, b * mask, rtol=0, atol=1e-5)
    assert (out[True][0][mask == 0] == 0).all()  # nothing off the response mask
    for a, b in zip(out[False][3], out[True][3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_token_budget_micro_batches_cover_each_row_once_within_budget():
    costs = torch.tensor([30, 5, 12, 12, 40, 7, 3, 25])
    rows = torch.arange(8)
    count = micro_batch_count(costs, 50)
    bins = split_rows(rows, costs, count)
    assert sorted(torch.cat(bins).tolist()) == list(range(8))
    assert all(len(b) == 1 or int(costs[b].sum()) <= 50 for b in bins)
    assert count == 3  # 134 tokens: at least 3 bins of 50, and 3 fit
    assert split_rows(rows, costs, count)[0].tolist() == bins[0].tolist()  # deterministic
    loads = [int(costs[b].sum()) for b in bins]
    assert max(loads) - min(loads) <= 40  # longest first into the lightest: balanced
    assert micro_batch_count(torch.tensor([90, 10]), 50) == 2  # a row above the budget alone
    assert [b.tolist() for b in fixed_rows(rows, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    with pytest.raises(ValueError):
        split_rows(rows[:2], costs, 3)


def test_row_costs_count_real_tokens_packed_and_the_width_padded():
    _, am, _ = _layout()
    assert row_costs(am, True).tolist() == am.sum(-1).tolist()
    assert row_costs(am, False).tolist() == [am.shape[1]] * am.shape[0]


def test_flop_count_follows_the_modules(tmp_path):
    model = load_policy(str(save_tiny_llama(tmp_path / "m")))
    c = model.config
    d, f, kv = c.hidden_size, c.intermediate_size, c.num_key_value_heads * c.head_dim
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f  # q, o; k, v; gate, up, down
    body, head = matmul_params(model)
    assert body == c.num_hidden_layers * per_layer
    assert head == c.vocab_size * d
    n = torch.tensor([4, 6])
    attention = 2 * c.num_hidden_layers * d * (4 * 5 + 6 * 7)
    assert forward_flops(body, c.num_hidden_layers, d, n, 3, head) == (
        2 * body * 10 + attention + 2 * head * 3
    )
    counter = FlopCounter(model, None)
    assert counter.train_flops(n, 3, epochs=2) == 2 * 3 * forward_flops(
        body, c.num_hidden_layers, d, n, 3, head
    )


def test_flop_count_of_a_lora_model_counts_each_base_weight_once(tmp_path):
    from rayrlhf.config import LoraConfig
    from rayrlhf.lora import add_adapters

    base = load_policy(str(save_tiny_llama(tmp_path / "m")))
    body, head = matmul_params(base)
    lora = add_adapters(load_policy(str(tmp_path / "m")), LoraConfig(rank=4))
    adapters = sum(p.numel() for n, p in lora.named_parameters() if ".lora_" in n)
    assert matmul_params(lora) == (body + adapters, head)
    counter = FlopCounter(lora, None)
    assert 0 < counter.trainable < 0.2  # the adapters only: the backward skips the base's grads
    n = torch.tensor([5])
    full = FlopCounter(base, None).train_flops(n, 2, 1)
    assert counter.train_flops(n, 2, 1) < full
