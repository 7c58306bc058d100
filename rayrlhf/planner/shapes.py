"""Model shapes without weights: presets or a local HF folder, counted on the meta device.

Only the config is read; the model is instantiated under ``torch.device("meta")`` so a 20B shape
costs no memory and well under a second. Parameter counts are what PPO trains and holds:

- ``params``: the causal LM (policy, reference, rollout copy); tied embeddings counted once.
- ``value_params``: the value model rayrlhf builds (``AutoModel`` backbone + ``Linear(h, 1)``), also
  used for a reward model of the same shape (a sequence-classification head is ``h × labels``).
- ``largest_layer``: the most parameters held by one module directly (``recurse=False``), as in
  DeepSpeed's ``model_to_params``: what ZeRO-3 gathers at once (usually the embedding).
- ``linears`` / ``value_linears``: every linear layer but the output head, as (name, d_in,
  d_out): what LoRA can adapt (:mod:`rayrlhf.planner.lora`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig
from transformers.pytorch_utils import Conv1D

# One linear layer: its module name and (in, out) features.
Linear = tuple[str, int, int]


def _gpt_neox_20b() -> PretrainedConfig:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        hidden_size=6144,
        num_hidden_layers=44,
        num_attention_heads=64,
        intermediate_size=24576,
        vocab_size=50432,
        max_position_embeddings=2048,
    )


def _llama(**kw: Any) -> Callable[[], PretrainedConfig]:
    def build() -> PretrainedConfig:
        from transformers import LlamaConfig

        return LlamaConfig(**kw)

    return build


PRESETS: dict[str, Callable[[], PretrainedConfig]] = {
    "gpt-neox-20b": _gpt_neox_20b,
    "llama-7b": _llama(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        intermediate_size=11008,
        vocab_size=32000,
    ),
    # Llama-3.2-1B's shape: GQA with 8 KV heads, tied embeddings (~1.24B parameters).
    "llama-1b": _llama(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "smollm2-135m": _llama(
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
}


@dataclass(frozen=True)
class ModelShape:
    """Sizes the memory formulas need; counts in parameters, dims in elements."""

    name: str
    params: int
    value_params: int
    largest_layer: int
    value_largest_layer: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    # Hundreds of entries: left out of repr and JSON (as_dict gives their count).
    linears: tuple[Linear, ...] = field(default=(), repr=False)
    value_linears: tuple[Linear, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output (the linear layers as counts)."""
        out = asdict(self)
        out["linears"], out["value_linears"] = len(self.linears), len(self.value_linears)
        return out


def load_config(name_or_path: str) -> PretrainedConfig:
    """A preset's config, or ``AutoConfig`` from a local HF folder (no weights are read)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]()
    if os.path.isdir(name_or_path):
        return AutoConfig.from_pretrained(name_or_path)
    raise ValueError(
        f"unknown model {name_or_path!r}: not a preset ({', '.join(PRESETS)}) nor a local folder"
    )


def _counts(model: torch.nn.Module) -> tuple[int, int]:
    # parameters() yields a tied weight once, so tied embeddings are not double counted.
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def linear_layers(model: torch.nn.Module) -> tuple[Linear, ...]:
    """Every linear layer but the output head, as peft's ``all-linear`` finds them.

    peft takes ``nn.Linear`` and GPT-2's ``Conv1D`` (weight stored in × out) and leaves out the
    module ``get_output_embeddings()`` returns (the LM head; a bare backbone has none).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = []
    for name, mod in model.named_modules():
        if mod is head:
            continue
        if isinstance(mod, torch.nn.Linear):
            out.append((name, mod.in_features, mod.out_features))
        elif isinstance(mod, Conv1D):
            out.append((name, mod.weight.shape[0], mod.nf))
    return tuple(out)


def shape_of(name_or_path: str) -> ModelShape:
    """Count parameters of the causal LM and the value model built on the meta device."""
    cfg = load_config(name_or_path)
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(cfg)
        backbone = AutoModel.from_config(cfg)
    params, largest = _counts(lm)
    backbone_params, backbone_largest = _counts(backbone)
    hidden = cfg.hidden_size
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    return ModelShape(
        name=os.path.basename(os.path.normpath(name_or_path)),
        params=params,
        value_params=backbone_params + hidden + 1,  # + the scalar head's weight and bias
        largest_layer=largest,
        value_largest_layer=max(backbone_largest, hidden + 1),
        hidden=hidden,
        layers=cfg.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab=cfg.vocab_size,
        linears=linear_layers(lm),
        value_linears=linear_layers(backbone),  # the scalar head is trained whole, not adapted
    )


def without_critic(shape: ModelShape) -> ModelShape:
    """``shape`` for a critic-free algorithm (GRPO, RLOO, ...): no value model to hold."""
    return replace(shape, value_params=0, value_largest_layer=0, value_linears=())
