"""RewardWorker: one finite score per (prompt, response), from a model or a Python function."""

from __future__ import annotations

import importlib
import math
import numbers
import time
from collections.abc import Callable, Sequence

import torch

from rayrlhf.config import RewardConfig
from rayrlhf.data.encode import encode_reward_inputs
from rayrlhf.experience import Rollout, Scores
from rayrlhf.models import load_reward_model

ScoreFn = Callable[[list[str], list[str]], Sequence[float]]


class RewardError(ValueError):
    """A scorer returned something that is not one finite number per sample."""


def import_function(spec: str) -> ScoreFn:
    """Resolve ``'package.module:function'`` to the callable it names."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RewardError(
            f"reward.function {spec!r}: cannot import {module_name!r}: {err}"
        ) from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RewardError(f"reward.function {spec!r}: {module_name} has no callable {attr!r}")
    return fn


def validate_scores(raw: object, sample_ids: list[str], source: str) -> torch.Tensor:
    """Check that ``raw`` holds exactly one finite real number per sample; return (B,) float32.

    No broadcasting, no silent NaN: the error names the scorer and the first offending sample.
    """
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().cpu().reshape(-1).tolist() if raw.dim() <= 1 else raw
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence | torch.Tensor):
        raise RewardError(f"{source} returned {type(raw).__name__}, expected a list of floats")
    if isinstance(raw, torch.Tensor):
        raise RewardError(f"{source} returned a tensor of shape {tuple(raw.shape)}, expected (B,)")
    if len(raw) != len(sample_ids):
        raise RewardError(f"{source} returned {len(raw)} scores for {len(sample_ids)} samples")
    for value, sid in zip(raw, sample_ids, strict=True):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RewardError(f"{source} gave non-number {value!r} for sample {sid!r}")
        if not math.isfinite(value):
            raise RewardError(f"{source} gave non-finite score {value!r} for sample {sid!r}")
    return torch.tensor([float(v) for v in raw], dtype=torch.float32)


class RewardWorker:
    """Scores rollout chunks with a sequence-classification model or a user function."""

    def __init__(self, config: RewardConfig, device: str = "cpu") -> None:
        self.cfg = config
        self.device = torch.device(device)
        if config.function is not None:
            self.source = f"reward function {config.function}"
            self.score_fn: ScoreFn = import_function(config.function)
        else:
            self.source = f"reward model {config.model}"
            self.model, self.tokenizer = load_reward_model(config.model)
            self.model.to(self.device)
            self.score_fn = self._model_scores

    @torch.no_grad()
    def _model_scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(prompts), self.cfg.batch_size):
            enc = encode_reward_inputs(
                self.tokenizer,
                prompts[i : i + self.cfg.batch_size],
                responses[i : i + self.cfg.batch_size],
            ).to(self.device)
            logits = self.model(**enc).logits.float()
            # Two labels (reject/accept): the log-odds of accept is the score.
            score = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
            out.extend(score.cpu().tolist())
        return out

    def score(self, rollout: Rollout) -> Scores:
        """(B,) rewards for a rollout chunk, validated to be finite and one per sample."""
        start = time.perf_counter()
        raw = self.score_fn(list(rollout.prompts), list(rollout.responses))
        rewards = validate_scores(raw, rollout.sample_ids, self.source)
        return Scores(list(rollout.sample_ids), rewards, time.perf_counter() - start)
