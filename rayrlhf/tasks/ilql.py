"""ILQL: the policy and its Q and V heads learned offline from scored responses (trlX's way).

Every row becomes ``(prompt, response, score)``: scalar rows as they are; pairwise rows as the
chosen response scored +1 and the rejected −1 (both 0 when tied); binary rows +1 accepted, −1
not; an Argilla export's corrections are extra rows scored +1. Scores are standardised with
the training rows' mean and std and placed on the response's last token. Each row is encoded
as SFT encodes it (the prompt templated as PPO shows it, the response and EOS); the response
tokens are the actions, the prompt tokens never are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rayrlhf.algos.ilql import ilql_loss, last_action_rewards, score_statistics
from rayrlhf.config import Config
from rayrlhf.data.encode import SFTExample, collate_sft
from rayrlhf.data.tables import DataError, read_argilla
from rayrlhf.ilql_model import ILQLHeads, ILQLPolicy
from rayrlhf.models import load_policy, load_tokenizer
from rayrlhf.tasks.base import encode_rows, load_split

TERMS = ("q", "v", "cql", "awac")


@dataclass
class Scored:
    """One encoded response and its score (standardised once the training rows are known)."""

    example: SFTExample
    score: float


def scored_rows(rows: list[dict], feedback: str) -> list[dict]:
    """``(prompt, response, score, row)`` rows from ``feedback``'s rows (module doc)."""
    if feedback == "scalar":
        return [{**r, "score": float(r["score"])} for r in rows]
    if feedback == "binary":
        return [{**r, "score": 1.0 if r["accepted"] else -1.0} for r in rows]
    out = []
    for r in rows:
        for column, score in (("chosen", 1.0), ("rejected", -1.0)):
            out.append(
                {
                    "prompt": r["prompt"],
                    "response": r[column],
                    "score": 0.0 if r["tie"] else score,
                    "row": r["row"],
                }
            )
    return out


def action_layout(examples: list[SFTExample]) -> tuple[Tensor, Tensor, Tensor]:
    """Where each example's states and actions sit in its collated (right-padded) row.

    Returns ``states`` (B, A+1): the positions whose hidden state precedes each response token,
    then the last token (the state after the last action); ``not_done`` (B, A+1): 1 at the
    states of real actions; ``lengths`` (B,): actions per example. A = the longest response.
    """
    lengths = torch.tensor([e.loss_tokens for e in examples])
    width = int(lengths.max())
    states = torch.zeros(len(examples), width + 1, dtype=torch.long)
    not_done = torch.zeros(len(examples), width + 1)
    for b, e in enumerate(examples):
        n = e.loss_tokens
        states[b, : n + 1] = torch.arange(e.prompt_len - 1, e.prompt_len + n)
        not_done[b, :n] = 1.0
    return states, not_done, lengths


class ILQLTask:
    """Items are :class:`Scored`; each response token (action) counts once in the loss mean."""

    def __init__(self, config: Config) -> None:
        assert config.ilql is not None
        self.cfg = c = config.ilql
        self.rollout = config.rollout
        self.base = config.model.policy
        self.tokenizer = load_tokenizer(config.tokenizer_path)
        train, held, self.report = load_split(
            c.data, c.heldout, c.heldout_fraction, c.feedback, config.run.seed
        )
        train, held = scored_rows(train, c.feedback), scored_rows(held, c.feedback)
        self.corrections = self._add_corrections(train, held)
        self.train = self._encode(train, c.data.path)
        self.heldout = self._encode(held, c.heldout_path)
        if not self.train:
            raise DataError(f"{c.data.path}: no ILQL training rows left")
        scores = torch.tensor([s.score for s in self.train], dtype=torch.float64)
        self.mean, self.std = score_statistics(scores) if c.normalize_scores else (0.0, 1.0)
        for item in (*self.train, *self.heldout):
            item.score = (item.score - self.mean) / self.std

    def _add_corrections(self, train: list[dict], held: list[dict]) -> int:
        """Argilla corrections as rows scored +1, on the side (train or held-out) of their
        prompt; returns how many."""
        c, added = self.cfg, 0
        sources = [(c.data, train if c.heldout is not None else None)]
        if c.heldout is not None:
            sources.append((c.heldout, held))
        held_prompts = {r["prompt"] for r in held}
        kept = held_prompts | {r["prompt"] for r in train}  # a table's limit applies to both
        for table, side in sources:
            if table.format != "argilla":
                continue
            for fix in (f for f in read_argilla(table).sft if f["prompt"] in kept):
                target = side
                if target is None:  # held-out rows split off data: follow the prompt
                    target = held if fix["prompt"] in held_prompts else train
                target.append({**fix, "score": 1.0})
                added += 1
        return added

    def _encode(self, rows: list[dict], source: str) -> list[Scored]:
        """Rows as :class:`Scored` items; over-long prompts counted per response."""
        c, items = self.cfg, []
        for row in rows:  # one at a time: a pairwise row gives two responses, one number
            for example in encode_rows(self.tokenizer, [row], c, self.rollout, self.report, source):
                if example.prompt_len == 0:
                    raise DataError(f"{source}: row {row['row']}: empty prompt; ILQL needs a state")
                items.append(Scored(example, row["score"]))
        return items

    def build_model(self) -> nn.Module:
        """``model.policy`` with fresh Q, target-Q and V heads on its last hidden state."""
        c = self.cfg
        base = load_policy(self.base, "fp32")
        vocab = base.get_output_embeddings().weight.shape[0]
        heads = ILQLHeads(base.config.hidden_size, vocab, c.two_qs)
        return ILQLPolicy(base, heads, c.decode_beta, c.top_k)

    def weight(self, item: Scored) -> float:
        """Each action (response token) counts once: the loss is a mean over actions."""
        return float(item.example.loss_tokens)

    def loss_sums(self, model: Any, items: list[Scored]) -> tuple[Tensor, dict[str, float]]:
        """Summed ILQL loss of a micro-batch (over its actions) and the sums of its terms."""
        c = self.cfg
        examples = [i.example for i in items]
        packed = c.learner.packing
        # Packed: the micro-batch's examples end to end in one row (no padding), each one's
        # states shifted by where it starts; otherwise one right-padded row each.
        packs = [examples] if packed else [[e] for e in examples]
        batch = collate_sft(packs, self.tokenizer.pad_token_id, packed=packed)
        states, not_done, lengths = action_layout(examples)
        if packed:
            starts = torch.tensor([0] + [len(e.ids) for e in examples[:-1]]).cumsum(0)
            states = states + starts[:, None]
        width = states.shape[1] - 1
        rows = batch["input_ids"][[0] * len(examples)] if packed else batch["input_ids"]
        actions = torch.stack([rows[b, s[1 : width + 1]] for b, s in enumerate(states)])
        actions = actions * not_done[:, :-1].long()  # padding actions: token 0, masked out
        scores = torch.tensor([i.score for i in items])
        rewards = last_action_rewards(scores, lengths, width)
        device = next(model.parameters()).device
        logits, qs, target_qs, vs = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device) if not packed else None,
            position_ids=batch["position_ids"].to(device),
            states=states.to(device),
        )
        loss, terms = ilql_loss(
            logits[:, :-1],
            [q[:, :-1] for q in qs],
            [q[:, :-1] for q in target_qs],
            vs,
            actions.to(device),
            rewards.to(device),
            not_done.to(device),
            gamma=c.gamma,
            tau=c.tau,
            cql_scale=c.cql_scale,
            awac_scale=c.awac_scale,
            beta=c.awac_beta,
        )
        count = float(lengths.sum())
        sums = {k: float(terms[k]) * count for k in TERMS}
        return loss * count, {
            "loss": float(loss.detach()) * count,
            "n": count,
            "responses": float(len(items)),
            "v_start": float(vs[:, 0].detach().float().sum()),
            **sums,
        }

    def means(self, sums: dict[str, float]) -> dict[str, float]:
        """Loss and its terms per action; V of the first state per response."""
        n = max(sums["n"], 1.0)
        out = {"loss": sums["loss"] / n, **{k: sums[k] / n for k in TERMS}}
        out["v_start"] = sums["v_start"] / max(sums["responses"], 1.0)
        out["actions"] = sums["n"]
        return out

    def after_step(self, model: ILQLPolicy, step: int) -> None:
        """Polyak-update the target Q heads every ``steps_for_target_q_sync`` optimizer steps.

        Every rank holds the same full heads (ZeRO-3 is refused), so each updates its own copy
        and they stay equal.
        """
        if (step + 1) % self.cfg.steps_for_target_q_sync == 0:
            model.heads.sync_targets(self.cfg.alpha)

    def save_extras(self, path: str) -> None:
        """The tokenizer travels with the model, as after SFT."""
        self.tokenizer.save_pretrained(path)
