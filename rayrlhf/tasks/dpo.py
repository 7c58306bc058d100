"""DPO: the policy trained on (prompt, chosen, rejected[, tie]) rows against a frozen reference.

Each pair is encoded as SFT encodes a row (the prompt templated as PPO shows it, the response
and EOS, the same length rules), once for the chosen and once for the rejected response. The
reference's summed log-probs of both are computed once, before training, by the reference
workers (:mod:`rayrlhf.roles.preference_reference`), written as parts into the folder
``dpo.reference_logprobs`` and read here; a digest of the encoded pairs guards that they
belong to these items.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rayrlhf.algos.losses import logprobs_from_logits
from rayrlhf.algos.preference_losses import dpo_loss, implicit_rewards, log_ratio_margin
from rayrlhf.config import Config
from rayrlhf.data.encode import SFTExample, collate_sft
from rayrlhf.data.tables import DataError, LoadReport
from rayrlhf.models import load_policy, load_tokenizer
from rayrlhf.tasks.base import encode_rows, load_split

SPLITS = ("train", "heldout")


@dataclass
class Pair:
    """One preference pair, encoded; ``ref`` is the reference's (chosen, rejected) log-probs."""

    chosen: SFTExample
    rejected: SFTExample
    tie: bool
    ref: tuple[float, float] | None = None


def sequence_logprobs(
    model: Any, examples: list[SFTExample], pad_id: int, packed: bool = False
) -> Tensor:
    """(B,) summed log-probs of each example's response tokens (prompt and padding excluded).

    ``packed``: the examples end to end in one row, positions restarting at each (transformers
    confines attention to each example), no padding computed; the same sums.
    """
    packs = [examples] if packed else [[e] for e in examples]
    batch = collate_sft(packs, pad_id, packed=packed)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    loss_mask = batch.pop("loss_mask")
    logits = model(**batch, use_cache=False).logits
    logprobs = logprobs_from_logits(logits[:, :-1].float(), batch["input_ids"][:, 1:])
    logprobs = logprobs * loss_mask[:, 1:]
    if not packed:
        return logprobs.sum(-1)
    # Each predicted token's example: a response token never starts one (prompts are not empty).
    lengths = torch.tensor([len(e.ids) for e in examples], device=device)
    owner = torch.repeat_interleave(torch.arange(len(examples), device=device), lengths)[1:]
    return logprobs.new_zeros(len(examples)).index_add(0, owner, logprobs[0])


def pairs_digest(splits: dict[str, list[Pair]]) -> str:
    """sha256 of every pair's token ids, in order: which items a reference file belongs to."""
    h = hashlib.sha256()
    for name in SPLITS:
        for pair in splits[name]:
            for example in (pair.chosen, pair.rejected):
                h.update(torch.tensor(example.ids, dtype=torch.int64).numpy().tobytes())
                h.update(b"|")
        h.update(name.encode())
    return h.hexdigest()


class DPOTask:
    """Items are :class:`Pair`; each counts once in the loss denominator (a mean over pairs)."""

    def __init__(self, config: Config, with_reference: bool = True) -> None:
        assert config.dpo is not None
        self.cfg = c = config.dpo
        self.rollout = config.rollout
        self.base = config.model.policy
        self.lora = config.model.lora  # adapters on the base (merged when saved), or None
        self.packing = c.learner.packing  # a micro-batch's sequences in one row, no padding
        self.tokenizer = load_tokenizer(config.tokenizer_path)
        train, held, self.report = load_split(
            c.data, c.heldout, c.heldout_fraction, "pairwise", config.run.seed
        )
        if c.ties == "drop":
            kept = [r for r in train if not r["tie"]]
            self.report.filtered += len(train) - len(kept)
            train = kept
        self.train = self._pairs(train, c.data.path, self.report)
        self.heldout = self._pairs(held, c.heldout_path, self.report)
        if not self.train:
            raise DataError(f"{c.data.path}: no DPO training pairs left")
        self.digest = pairs_digest({"train": self.train, "heldout": self.heldout})
        if with_reference:
            self._attach_reference()

    def _pairs(self, rows: list[dict], source: str, report: LoadReport) -> list[Pair]:
        c = self.cfg
        encoded = []
        for column, counted in (("chosen", report), ("rejected", LoadReport())):
            responses = [{**r, "response": r[column]} for r in rows]
            # counted: a filtered prompt is one row skipped, not two
            examples = encode_rows(self.tokenizer, responses, c, self.rollout, counted, source)
            encoded.append({e.row: e for e in examples})
        chosen, rejected = encoded
        kept = [r for r in rows if r["row"] in chosen]
        return [Pair(chosen[r["row"]], rejected[r["row"]], r["tie"]) for r in kept]

    def _attach_reference(self) -> None:
        folder = self.cfg.reference_logprobs
        if folder is None or not Path(folder).is_dir():
            raise DataError(
                "dpo needs the reference's log-probs (dpo.reference_logprobs): the DPO stage "
                "computes them first; run it with `rayrlhf pipeline`"
            )
        parts = [torch.load(p, weights_only=True) for p in sorted(Path(folder).glob("part-*.pt"))]
        count = parts[0]["count"] if parts else 0
        if sorted(p["index"] for p in parts) != list(range(count)) or count == 0:
            raise DataError(f"{folder}: reference log-probs incomplete ({len(parts)} parts)")
        if any(p["digest"] != self.digest for p in parts):
            raise DataError(
                f"{folder} holds reference log-probs of other pairs (data, template or length "
                "limits changed); delete it to compute them again"
            )
        for part in parts:  # part k holds pairs k, k + count, k + 2·count, ...
            for name in SPLITS:
                pairs = getattr(self, name)[part["index"] :: count]
                for pair, (c, r) in zip(pairs, part[name].tolist(), strict=True):
                    pair.ref = (c, r)

    def reference_share(self, model: Any, index: int, count: int, micro: int) -> dict:
        """The reference's (chosen, rejected) log-probs of pairs ``index::count`` of each split
        under ``model`` (the frozen starting policy): one part of the reference file."""
        part: dict[str, Any] = {"digest": self.digest, "index": index, "count": count}
        pad = self.tokenizer.pad_token_id
        for name in SPLITS:
            pairs = getattr(self, name)[index::count]
            values = [torch.zeros(0, 2)]
            for start in range(0, len(pairs), micro):
                batch = pairs[start : start + micro]
                examples = [p.chosen for p in batch] + [p.rejected for p in batch]
                logprobs = sequence_logprobs(model, examples, pad, self.packing).cpu()
                values.append(torch.stack([logprobs[: len(batch)], logprobs[len(batch) :]], -1))
            part[name] = torch.cat(values)
        return part

    def build_model(self) -> nn.Module:
        """The causal LM to train (``model.policy``, which is also the frozen reference), with
        LoRA adapters when ``model.lora`` is set: the reference is then exactly the base with
        its adapters disabled, the model the reference workers load."""
        return load_policy(self.base, "fp32", self.lora)

    def weight(self, item: Pair) -> float:
        """Each pair counts once: the loss is a mean over the minibatch's pairs."""
        return 1.0

    def loss_sums(self, model: Any, items: list[Pair]) -> tuple[Tensor, dict[str, float]]:
        """Summed DPO loss of a micro-batch and the sums behind its metrics."""
        c, n = self.cfg, len(items)
        examples = [p.chosen for p in items] + [p.rejected for p in items]
        pad = self.tokenizer.pad_token_id
        logprobs = sequence_logprobs(model, examples, pad, self.packing)
        chosen, rejected = logprobs[:n], logprobs[n:]
        ref = torch.tensor([p.ref for p in items], dtype=logprobs.dtype, device=logprobs.device)
        tie = torch.tensor([p.tie for p in items], device=logprobs.device)
        margin = log_ratio_margin(chosen, rejected, ref[:, 0], ref[:, 1])
        loss = dpo_loss(margin, tie, c.beta, c.loss, c.label_smoothing).sum()
        r_chosen = implicit_rewards(chosen.detach(), ref[:, 0], c.beta)
        r_rejected = implicit_rewards(rejected.detach(), ref[:, 1], c.beta)
        decided = (~tie).float()
        return loss, {
            "loss": float(loss.detach()),
            "n": float(n),
            "decided": float(decided.sum()),
            "correct": float(((r_chosen > r_rejected).float() * decided).sum()),
            "margin": float(((r_chosen - r_rejected) * decided).sum()),
            "logp_chosen": float(chosen.detach().sum()),
            "logp_rejected": float(rejected.detach().sum()),
        }

    def means(self, sums: dict[str, float]) -> dict[str, float]:
        """Mean loss; implicit-reward accuracy and margin over untied pairs; mean log-probs."""
        n, decided = max(sums["n"], 1.0), max(sums["decided"], 1.0)
        return {
            "loss": sums["loss"] / n,
            "accuracy": sums["correct"] / decided,
            "margin": sums["margin"] / decided,
            "logp_chosen": sums["logp_chosen"] / n,
            "logp_rejected": sums["logp_rejected"] / n,
            "pairs": sums["n"],
        }

    def save_extras(self, path: str) -> None:
        """The tokenizer travels with the model, as after SFT."""
        self.tokenizer.save_pretrained(path)
