"""Hugging Face loading and the forward passes over the rollout layout.

The only module that loads models or tokenizers: policy (causal LM), value model (LM backbone plus
a scalar head), reward model (sequence classification). The forward passes over the rollout
layout are in :mod:`rayrlhf.forward`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rayrlhf.config import LoraConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (EOS when it has none); pads and truncates on the left."""
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer at {path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    tok.truncation_side = "left"  # an over-long prompt keeps its end, which the response continues
    return tok


def load_policy(
    path: str, precision: str = "fp32", lora: LoraConfig | None = None
) -> PreTrainedModel:
    """The causal LM at ``path`` (policy, reference or rollout copy); with ``lora``, wrapped in
    fresh LoRA adapters (:func:`rayrlhf.lora.add_adapters`: base frozen, the model as it was
    until the adapters train)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[precision])
    if lora is None:
        return model
    from rayrlhf.lora import add_adapters  # peft only where adapters are used

    return add_adapters(model, lora, causal_lm=True)


class ValueModel(nn.Module):
    """A transformer backbone with a scalar head: one value per token position.

    The backbone is a transformers base model, or one wrapped in LoRA adapters (a peft model,
    which forwards ``config`` and the forward call to it); the head is always a plain layer.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1, dtype=next(backbone.parameters()).dtype)
        # A small head keeps the first value estimates near zero, like the returns at step 0.
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute the backbone's activations in the backward pass (the head is one layer)."""
        self.backbone.gradient_checkpointing_enable()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """(B, T) ids → (B, T) values."""
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,  # scoring whole sequences: a KV cache is only memory
        )
        return self.head(out.last_hidden_state).squeeze(-1).float()


def load_value_model(
    path: str, precision: str = "fp32", lora: LoraConfig | None = None
) -> ValueModel:
    """Value model whose backbone starts from the (policy) checkpoint at ``path``.

    With ``lora`` the backbone is its own frozen copy with adapters of its own (not the
    policy's), and the scalar head trains in full.
    """
    backbone = AutoModel.from_pretrained(path, dtype=DTYPES[precision])
    if lora is not None:
        from rayrlhf.lora import add_adapters

        backbone = add_adapters(backbone, lora, causal_lm=False)
    return ValueModel(backbone)


def load_reward_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The reward model's tokenizer, with a pad token (EOS when it has none)."""
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


REWARD_MODEL_MARKER = "rayrlhf_reward_model.json"
"""File a trained reward model's folder holds beside the HF files: what trained it (the reward-model
stage writes it; transformers ignores it, so the folder still loads anywhere)."""


class RewardModelError(ValueError):
    """A folder given as a reward model cannot score: e.g. a policy whose score head is missing."""


def write_reward_model_marker(path: str, info: dict[str, Any]) -> None:
    """Mark ``path`` as a trained reward model, recording ``info`` (what trained it) as JSON."""
    with open(os.path.join(path, REWARD_MODEL_MARKER), "w", encoding="utf-8") as f:
        json.dump({"kind": "reward_model", **info}, f, indent=2, sort_keys=True)
        f.write("\n")


def _refuse_untrained_head(path: str, model: PreTrainedModel, missing: set[str]) -> None:
    """Raise :class:`RewardModelError` when loading left weights newly initialised.

    transformers fills weights absent from the folder with random values and only logs it: a
    policy folder (a causal LM) loads as a sequence classifier with a random score head, whose
    scores change on every load. Missing *head* weights are the usual cause: a pipeline's
    ``sft/model`` given where ``reward_model/model`` was meant.
    """
    if not missing:
        return
    base = model.base_model_prefix + "."
    head = sorted(k for k in missing if not k.startswith(base))
    if not head or os.path.exists(os.path.join(path, REWARD_MODEL_MARKER)):
        # A trained folder (head or marker present) that lacks weights is damaged, not mixed up.
        raise RewardModelError(
            f"reward model folder {path} lacks weights {', '.join(sorted(missing)[:5])}: they "
            "would be random; the folder is incomplete or of another architecture"
        )
    arch = ", ".join(model.config.architectures or []) or "a model"
    parent = os.path.dirname(os.path.abspath(path))
    sibling = os.path.join(os.path.dirname(parent), "reward_model", "model")
    hint = (  # a pipeline's run folder: name the reward model it trained
        f"did you mean {sibling}?"
        if os.path.basename(parent) == "sft" and os.path.isdir(sibling)
        else "give a trained reward model's folder (a pipeline's reward_model/model), "
        "not a policy's (its sft/model)"
    )
    raise RewardModelError(
        f"{path} is not a trained reward model: it holds {arch} without a score head "
        f"({', '.join(head)} would be newly initialised, giving random scores); {hint}"
    )


def load_reward_model(
    path: str, num_labels: int | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence-classification reward model (1 label: score; 2 labels: log-odds) and tokenizer.

    ``num_labels=1`` starts a reward model to train from any base (a fresh one-output head).
    Without ``num_labels`` the folder must hold a trained head: one that loading would
    initialise at random is refused with :class:`RewardModelError`.
    """
    extra = {} if num_labels is None else {"num_labels": num_labels}
    model, info = AutoModelForSequenceClassification.from_pretrained(
        path, output_loading_info=True, **extra
    )
    if num_labels is None:
        _refuse_untrained_head(path, model, set(info.get("missing_keys") or ()))
    if model.config.num_labels not in (1, 2):
        raise RewardModelError(
            f"reward model at {path} has {model.config.num_labels} labels; need 1 or 2"
        )
    tok = load_reward_tokenizer(path)
    model.config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def disable_dropout(model: nn.Module) -> nn.Module:
    """Zero every dropout in ``model`` so it can train in train mode without randomness.

    Train mode is still needed (gradient checkpointing only runs in it), but dropout would make
    log-probs differ between the rollout and the learner, and results depend on how samples are
    split over ranks. Covers ``nn.Dropout`` modules and the ``attention_dropout`` rate that
    attention layers pass to the fused kernels.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    return model
