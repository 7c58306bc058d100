"""Tiny random GPT-2-style models with a word-level tokenizer, for tests and benchmarks.

They plumb every path a real model takes (HF save/load, generate with KV cache, DeepSpeed) in
seconds on a CPU. The tokenizer's pad token *is* its EOS token, as in many real tokenizers, so the
tests exercise the EOS-in-the-mask rule.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from rayrlhf.planner.shapes import PRESETS

EOS = "<eos>"
WORDS = (
    "good bad the a movie film plot actor scene story was is very quite not and but "
    "funny dull long short music light dark happy sad great poor fine odd new old"
).split()


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over :data:`WORDS`; EOS (id 0) doubles as pad, unknown words → unk."""
    vocab = {EOS: 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token="<unk>"
    )


def _config(
    vocab_size: int, layers: int, hidden: int, heads: int = 4, **extra: object
) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=128,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **extra,
    )


def build_model(
    vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 64, heads: int = 4
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 with ``layers`` blocks of width ``hidden``."""
    torch.manual_seed(seed)
    return GPT2LMHeadModel(_config(vocab_size, layers, hidden, heads))


def save_tiny(
    path: str | Path, seed: int = 0, layers: int = 2, hidden: int = 64, heads: int = 4
) -> Path:
    """Write a tiny model and its tokenizer as a Hugging Face folder at ``path``.

    vLLM's CPU attention kernels take head sizes of 32 and up (64, 128, ...): for the vLLM
    backend use ``heads=1`` (one head of 64), not the default four heads of 16.
    """
    path = Path(path)
    tok = build_tokenizer()
    build_model(len(tok), seed, layers, hidden, heads).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_tiny_llama(path: str | Path, seed: int = 0) -> Path:
    """A tiny random Llama in SmolLM2's layout (grouped-query attention, 2 query heads of 64 to
    1 key/value head, gated MLP, tied embeddings) and the word-level tokenizer: what vLLM's
    Llama weight loader fuses (q/k/v, gate/up) and ties, at a tiny model's cost."""
    from transformers import LlamaConfig

    path = Path(path)
    tok = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_smollm2_shaped(path: str | Path, seed: int = 0) -> Path:
    """A random Llama with SmolLM2-135M's shape (30 layers, width 576, GQA 9/3 heads, 49,152
    embeddings, tied head) and the word-level tokenizer: real-size compute for benchmarks where
    the real weights cannot travel."""
    path = Path(path)
    tok = build_tokenizer()
    torch.manual_seed(seed)
    config = PRESETS["smollm2-135m"]()  # the planner's shape preset: one description
    config.bos_token_id = config.eos_token_id = config.pad_token_id = 0
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_tiny_reward_model(path: str | Path, num_labels: int = 1, seed: int = 0) -> Path:
    """Write a tiny random GPT-2 sequence classifier (a reward model) and its tokenizer."""
    path = Path(path)
    tok = build_tokenizer()
    torch.manual_seed(seed)
    GPT2ForSequenceClassification(_config(len(tok), 2, 64, num_labels=num_labels)).save_pretrained(
        path
    )
    tok.save_pretrained(path)
    return path
