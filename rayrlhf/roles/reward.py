"""RewardWorker: one finite score per (prompt, response), from a model, a function or an HTTP
endpoint."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence

from rayrlhf.config import RewardConfig
from rayrlhf.experience import Rollout, Scores
from rayrlhf.rewards.http import HttpScorer
from rayrlhf.rewards.model_scorer import ModelScorer
from rayrlhf.rewards.validation import RewardError, validate_scores

__all__ = ["RewardError", "RewardWorker", "import_function", "validate_scores"]

ScoreFn = Callable[[list[str], list[str]], Sequence[float]]


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


class RewardWorker:
    """Scores rollout chunks with a sequence-classification model, a user function or a URL."""

    def __init__(self, config: RewardConfig, device: str = "cpu") -> None:
        self.cfg = config
        self.http: HttpScorer | None = None
        if config.function is not None:
            self.source = f"reward function {config.function}"
            self.score_fn: ScoreFn = import_function(config.function)
        elif config.url is not None:
            self.source = f"reward endpoint {config.url}"
            self.http = HttpScorer.from_config(config)  # with its bearer token, if one is set
        else:
            self.source = f"reward model {config.model}"
            self.score_fn = ModelScorer(config.model, config.batch_size, device)

    def score(self, rollout: Rollout) -> Scores:
        """(B,) rewards for a rollout chunk, validated to be finite and one per sample."""
        start = time.perf_counter()
        prompts, responses = list(rollout.prompts), list(rollout.responses)
        if self.http is not None:
            raw = self.http.score(list(rollout.sample_ids), prompts, responses)
        else:
            raw = self.score_fn(prompts, responses)
        rewards = validate_scores(raw, rollout.sample_ids, self.source)
        return Scores(list(rollout.sample_ids), rewards, time.perf_counter() - start)
