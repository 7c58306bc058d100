"""Reward model from human feedback: pairwise (Bradley–Terry), scalar scores, accept/reject.

The model is a Hugging Face sequence classifier with one output, the reward, read from the
(prompt, response) text pair exactly as the reward workers will present it during PPO.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rayrlhf import __version__
from rayrlhf.algos.reward_losses import (
    binary_loss,
    pairwise_correct,
    pairwise_loss,
    regression_loss,
)
from rayrlhf.config import Config
from rayrlhf.data.encode import limit_reward_prompts, reward_features
from rayrlhf.data.tables import DataError
from rayrlhf.models import (
    load_reward_model,
    load_reward_tokenizer,
    write_reward_model_marker,
)
from rayrlhf.tasks.base import load_split, naming_source


class RewardModelTask:
    """Items are row dicts; the loss denominator is the number of rows (pairs or samples)."""

    def __init__(self, config: Config) -> None:
        assert config.reward_model is not None
        self.cfg = c = config.reward_model
        self.tokenizer = load_reward_tokenizer(c.model)
        train, held, self.report = load_split(
            c.data, c.heldout, c.heldout_fraction, c.feedback, config.run.seed
        )
        if c.feedback == "pairwise" and c.ties == "drop":
            kept = [r for r in train if not r["tie"]]
            self.report.filtered += len(train) - len(kept)
            train = kept
        self.train = self._limit(train, c.data.path)
        self.heldout = self._limit(held, c.heldout_path)
        if not self.train:
            raise DataError(f"{c.data.path}: no reward-model training rows left")
        # Tokenised once here, not at every step and epoch: items carry their encodings.
        for rows in (self.train, self.heldout):
            self._attach_features(rows)
        self.mean, self.std = 0.0, 1.0
        if c.feedback == "scalar" and c.normalize_scores:
            scores = torch.tensor([r["score"] for r in self.train], dtype=torch.float64)
            self.mean = float(scores.mean())
            self.std = float(scores.std()) if len(scores) > 1 and scores.std() > 0 else 1.0

    def _limit(self, rows: list[dict], source: str) -> list[dict]:
        c = self.cfg
        with naming_source(source):
            return limit_reward_prompts(
                self.tokenizer, rows, c.max_prompt_tokens, c.overlong_prompt, self.report
            )

    def build_model(self) -> nn.Module:
        """The base model with a fresh one-output head: the reward."""
        model, _ = load_reward_model(self.cfg.model, num_labels=1)
        if self.cfg.feedback == "scalar":
            # Saved with the model so a user can map rewards back to the raters' scale.
            model.config.rayrlhf_score_mean, model.config.rayrlhf_score_std = self.mean, self.std
        return model

    def weight(self, item: dict) -> float:
        """Each row counts once: the loss is a mean over the minibatch's rows."""
        return 1.0

    def _attach_features(self, rows: list[dict]) -> None:
        """Give each row ``features``: the encoded pair(s) its rewards are computed from."""
        if not rows:  # e.g. no held-out split (heldout_fraction 0): the tokenizer takes no []
            return
        columns = ("chosen", "rejected") if self.cfg.feedback == "pairwise" else ("response",)
        prompts = [r["prompt"] for r in rows]
        encoded = [
            reward_features(self.tokenizer, prompts, [r[col] for r in rows], self.cfg.max_tokens)
            for col in columns
        ]
        for i, row in enumerate(rows):
            row["features"] = [enc[i] for enc in encoded]

    def _rewards(self, model: Any, features: list[dict]) -> Tensor:
        enc = self.tokenizer.pad(features, return_tensors="pt")
        device = next(model.parameters()).device
        return model(**enc.to(device)).logits[:, 0].float()

    def loss_sums(self, model: Any, items: list[dict]) -> tuple[Tensor, dict]:
        """Summed loss of a micro-batch and the statistics its kind of feedback reports."""
        n = float(len(items))
        if self.cfg.feedback == "pairwise":
            features = [r["features"][0] for r in items] + [r["features"][1] for r in items]
            rewards = self._rewards(model, features)
            chosen, rejected = rewards[: len(items)], rewards[len(items) :]
            tie = torch.tensor([r["tie"] for r in items], device=rewards.device)
            loss = pairwise_loss(chosen, rejected, tie).sum()
            correct, decided = pairwise_correct(chosen.detach(), rejected.detach(), tie)
            margin = ((chosen - rejected).detach() * decided).sum()
            stats = {
                "correct": float(correct.sum()),
                "decided": float(decided.sum()),
                "margin": float(margin),
            }
        else:
            rewards = self._rewards(model, [r["features"][0] for r in items])
            if self.cfg.feedback == "scalar":
                target = torch.tensor([r["score"] for r in items], device=rewards.device)
                loss = regression_loss(rewards, (target - self.mean) / self.std).sum()
                err = (rewards.detach() * self.std + self.mean) - target  # in the raters' units
                stats = {"sq_err": float((err**2).sum()), "abs_err": float(err.abs().sum())}
            else:
                label = torch.tensor([float(r["accepted"]) for r in items], device=rewards.device)
                loss = binary_loss(rewards, label).sum()
                hits = ((rewards.detach() > 0).float() == label).float().sum()
                stats = {"correct": float(hits), "decided": n}
        return loss, {"loss": float(loss.detach()), "n": n, **stats}

    def means(self, sums: dict[str, float]) -> dict[str, float]:
        """Mean loss, plus accuracy and margin (pairwise/binary) or RMSE and MAE (scalar)."""
        n = max(sums["n"], 1.0)
        out = {"loss": sums["loss"] / n, "examples": sums["n"]}
        if "correct" in sums:
            out["accuracy"] = sums["correct"] / max(sums["decided"], 1.0)
        if "margin" in sums:
            out["margin"] = sums["margin"] / max(sums["decided"], 1.0)
        if "sq_err" in sums:
            out["rmse"] = (sums["sq_err"] / n) ** 0.5
            out["mae"] = sums["abs_err"] / n
        return out

    def save_extras(self, path: str) -> None:
        """The tokenizer and the trained-reward-model marker, beside the weights.

        The reward workers load the tokenizer from the model folder; its length limit is the one
        trained with, so PPO samples are cut as training pairs were. The marker records what
        trained the folder, so it can be told apart from a policy folder (which has no head).
        """
        self.tokenizer.model_max_length = self.cfg.max_tokens
        self.tokenizer.save_pretrained(path)
        write_reward_model_marker(
            path,
            {
                "trained_by": f"rayrlhf {__version__} reward_model stage",
                "base_model": self.cfg.model,
                "feedback": self.cfg.feedback,
                "max_tokens": self.cfg.max_tokens,
                "num_labels": 1,
                "score_mean": self.mean,
                "score_std": self.std,
            },
        )
