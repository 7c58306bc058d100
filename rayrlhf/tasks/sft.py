"""SFT: next-token loss on response tokens only, over (prompt, response) rows, or over the
accepted ones of (prompt, response, accepted) rows (``sft.feedback: accepted``)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from rayrlhf.algos.losses import sft_nll_sum
from rayrlhf.config import Config
from rayrlhf.data.encode import SFTExample, collate_sft, pack_examples
from rayrlhf.data.tables import DataError
from rayrlhf.models import load_policy, load_tokenizer
from rayrlhf.tasks.base import encode_rows, load_split


def require_packed_masks() -> None:
    """Packing relies on transformers building a block-diagonal mask from restarting position
    ids (4.54+); without it packed rows would silently attend to each other."""
    import transformers.masking_utils as masking

    if not hasattr(masking, "find_packed_sequence_indices"):
        raise DataError(
            "sft.packing needs transformers >= 4.54 (block-diagonal masks for packed rows); "
            "upgrade transformers or set sft.packing: false"
        )


class SFTTask:
    """Items are packs of examples (one example each unless ``sft.packing``)."""

    def __init__(self, config: Config) -> None:
        assert config.sft is not None
        self.cfg = config.sft
        if self.cfg.packing:
            require_packed_masks()
        self.rollout = config.rollout  # prompts are shown as PPO will show them
        self.base = config.model.policy
        self.lora = config.model.lora  # adapters on the base (merged when saved), or None
        self.tokenizer = load_tokenizer(config.tokenizer_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.learner_packing = self.cfg.learner.packing
        if self.learner_packing:
            require_packed_masks()
        accepted_only = self.cfg.feedback == "accepted"
        train_rows, held_rows, self.report = load_split(
            self.cfg.data,
            self.cfg.heldout,
            self.cfg.heldout_fraction,
            "binary" if accepted_only else "sft",
            config.run.seed,
        )
        if accepted_only:  # trlX's and TRL's SFT shape: rejected responses are not imitated
            rows = len(train_rows) + len(held_rows)
            train_rows = [r for r in train_rows if r["accepted"]]
            held_rows = [r for r in held_rows if r["accepted"]]
            self.report.filtered += rows - len(train_rows) - len(held_rows)
            if not train_rows:
                raise DataError(f"{self.cfg.data.path}: no accepted SFT row to train on")
        self.train = self._items(train_rows, self.cfg.data.path)
        self.heldout = self._items(held_rows, self.cfg.heldout_path)

    def _items(self, rows: list[dict], source: str) -> list[list[SFTExample]]:
        c = self.cfg
        examples = encode_rows(self.tokenizer, rows, c, self.rollout, self.report, source)
        return pack_examples(examples, c.max_tokens) if c.packing else [[e] for e in examples]

    def build_model(self) -> nn.Module:
        """The causal LM to fine-tune (``model.policy``), with LoRA adapters when
        ``model.lora`` is set (only they train)."""
        return load_policy(self.base, "fp32", self.lora)

    def weight(self, item: list[SFTExample]) -> float:
        """Response tokens of a pack: the loss is a token mean over the minibatch."""
        return float(sum(e.loss_tokens for e in item))

    def loss_sums(self, model: Any, items: list[list[SFTExample]]) -> tuple[Tensor, dict]:
        """Summed response-token NLL of a micro-batch of packs."""
        if self.learner_packing:  # the micro-batch's examples in one row: no padding computed
            batch = collate_sft([[e for pack in items for e in pack]], self.pad_id, packed=True)
        else:
            batch = collate_sft(items, self.pad_id, self.cfg.packing)
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        loss_mask = batch.pop("loss_mask")
        logits = model(**batch, use_cache=False).logits
        nll, tokens = sft_nll_sum(logits, batch["input_ids"], loss_mask)
        return nll, {"loss": float(nll.detach()), "tokens": float(tokens)}

    def means(self, sums: dict[str, float]) -> dict[str, float]:
        """Token-mean NLL, its perplexity, and the token count."""
        loss = sums["loss"] / max(sums["tokens"], 1.0)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": sums["tokens"]}

    def save_extras(self, path: str) -> None:
        """The tokenizer travels with the model: PPO's roles load both from this folder."""
        self.tokenizer.save_pretrained(path)
