"""SFT/RM encoding: templates, the over-long prompt rules, packing, and the loss mask."""

from __future__ import annotations

import pytest
import torch

from rayrlhf.algos.losses import sft_nll_sum
from rayrlhf.data.encode import (
    SFTExample,
    collate_sft,
    encode_sft,
    format_prompt,
    limit_reward_prompts,
    pack_examples,
)
from rayrlhf.data.tables import DataError, LoadReport
from rayrlhf.models import load_policy, load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(str(tiny_model))


def _rows(*pairs):
    return [{"prompt": p, "response": r, "row": i + 1} for i, (p, r) in enumerate(pairs)]


def _encode(tok, rows, report, **kw):
    args = dict(
        template="plain",
        plain_template="{prompt}",
        max_prompt_tokens=4,
        max_tokens=8,
        overlong_prompt="error",
    )
    return encode_sft(tok, rows, report=report, **{**args, **kw})


def test_prompt_then_response_then_eos(tok):
    report = LoadReport()
    (ex,) = _encode(tok, _rows(("the movie", " was good")), report)
    assert tok.decode(ex.ids[: ex.prompt_len]) == "the movie"
    assert ex.ids[ex.prompt_len :] == tok(" was good")["input_ids"] + [tok.eos_token_id]
    assert ex.loss_tokens == 3


def test_plain_template_and_chat_template(tok):
    assert format_prompt(tok, "a film", "plain", "review: {prompt}") == "review: a film"
    assert format_prompt(tok, "a film", "auto", "{prompt}") == "a film"  # no chat template
    with pytest.raises(DataError, match="no chat template"):
        format_prompt(tok, "a film", "chat", "{prompt}")
    tok.chat_template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
    try:
        assert format_prompt(tok, "a film", "auto", "{prompt}") == "<a film>"
    finally:
        tok.chat_template = None


def test_overlong_prompt_error_truncate_filter(tok):
    rows = _rows(("the movie was very good", " yes"), ("a film", " is good"))
    with pytest.raises(DataError, match="row 1: prompt has 5 tokens, more than max_prompt_tok"):
        _encode(tok, rows, LoadReport())
    report = LoadReport()
    first, _ = _encode(tok, rows, report, overlong_prompt="truncate")
    assert tok.decode(first.ids[: first.prompt_len]) == "movie was very good"  # keeps the end
    assert report.truncated == 1
    report = LoadReport()
    kept = _encode(tok, rows, report, overlong_prompt="filter")
    assert [e.row for e in kept] == [2] and report.filtered == 1
    reward_rows = [{"prompt": "the movie was very good", "response": "x", "row": 3}]
    report = LoadReport()
    out = limit_reward_prompts(tok, reward_rows, 2, "truncate", report)
    assert out[0]["prompt"] == "very good" and report.truncated == 1


def test_response_is_cut_at_max_tokens(tok):
    (ex,) = _encode(tok, _rows(("the", " good good good good good good good good")), LoadReport())
    assert len(ex.ids) == 8 and ex.ids[-1] != tok.eos_token_id


def test_packing_first_fit_in_order():
    exs = [SFTExample(list(range(n)), 1, i) for i, n in enumerate([5, 4, 3, 2])]
    packs = pack_examples(exs, 8)
    assert [[e.row for e in p] for p in packs] == [[0, 2], [1, 3]]  # 5+3 and 4+2


def test_loss_mask_covers_response_tokens_only(tok):
    exs = _encode(tok, _rows(("the movie", " was good"), ("a", " film")), LoadReport())
    batch = collate_sft([[e] for e in exs], tok.pad_token_id, packed=False)
    assert batch["loss_mask"].sum() == sum(e.loss_tokens for e in exs)
    assert batch["loss_mask"][0].tolist() == [False, False, True, True, True]
    # Gradient reaches exactly the logits that predict response tokens, nothing else.
    logits = torch.randn(2, 5, len(tok), requires_grad=True)
    nll, count = sft_nll_sum(logits, batch["input_ids"], batch["loss_mask"])
    nll.backward()
    touched = logits.grad.abs().sum(-1) > 0
    assert touched.tolist() == [[False, True, True, True, False], [True, True, False, False, False]]
    assert count == 5


def test_packed_batch_equals_unpacked(tok, tiny_model):
    """Packed examples neither see each other nor change their loss: same sum as unpacked."""
    model = load_policy(str(tiny_model)).eval()
    rows = _rows(("the movie", " was good"), ("a film is", " dull"), ("the plot", " is odd"))
    exs = _encode(tok, rows, LoadReport(), max_tokens=16)

    def loss(packs, packed, use_cache=False):
        batch = collate_sft(packs, tok.pad_token_id, packed)
        mask = batch.pop("loss_mask")
        with torch.no_grad():
            logits = model(**batch, use_cache=use_cache).logits
        return sft_nll_sum(logits, batch["input_ids"], mask)

    plain, n_plain = loss([[e] for e in exs], packed=False)
    packs = pack_examples(exs, 16)
    assert len(packs) == 1  # all three share one sequence
    packed, n_packed = loss(packs, packed=True)
    assert n_plain == n_packed
    assert torch.allclose(plain, packed, atol=1e-4)
    # The check has teeth: transformers only builds the block mask without a KV cache; with one,
    # packed examples attend to each other and the loss moves.
    leaky, _ = loss(packs, packed=True, use_cache=True)
    assert not torch.allclose(plain, leaky, atol=1e-4)


def test_fit_prompt_cuts_the_prompt_not_the_chat_header(tok):
    from rayrlhf.data.encode import fit_prompt

    assert tok.decode(fit_prompt(tok, "the movie was very good", "plain", "{prompt}", 3)) == (
        "was very good"
    )
    tok.chat_template = "{% for m in messages %}bad bad {{ m['content'] }}{% endfor %}"
    try:
        ids = fit_prompt(tok, "the movie was very good", "chat", "{prompt}", 4)
        assert tok.decode(ids) == "bad bad very good"  # header kept, prompt's end kept
    finally:
        tok.chat_template = None


def test_heldout_split_keeps_a_prompt_on_one_side(tmp_path):
    import json

    from rayrlhf.config import TableConfig
    from rayrlhf.tasks.base import load_split

    rows = [{"prompt": f"p{i % 10}", "response": f"r{i}"} for i in range(100)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, held, _ = load_split(TableConfig(path=str(path)), None, 0.2, "sft", seed=3)
    assert len(held) == 20 and len(train) == 80
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
