"""RewardWorker: one finite score per (prompt, response), from a model, a function or an HTTP
endpoint."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Mapping, Sequence

from rayrlhf.config import RewardConfig
from rayrlhf.experience import Rollout, Scores
from rayrlhf.rewards.http import HttpScorer
from rayrlhf.rewards.model_scorer import ModelScorer
from rayrlhf.rewards.validation import RewardError, validate_scores

__all__ = ["RewardError", "RewardWorker", "import_function", "takes_rows", "validate_scores"]

# Metric names the reward already has: reward/mean, reward/std (reward/NAME per component).
RESERVED_COMPONENTS = frozenset({"mean", "std", "stderr"})
# Components whose weight is not 1 unless reward.component_weights names them: ``tool_call``
# (did the episode use its tool, every call without error) is logged on every multi-turn run
# and becomes a format reward only when given a weight.
DEFAULT_WEIGHTS = {"tool_call": 0.0}
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


def takes_rows(fn: Callable) -> bool:
    """Whether a reward function wants the prompt rows: it has a parameter named ``rows``."""
    try:
        return "rows" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or a C callable: text only
        return False


class RewardWorker:
    """Scores rollout chunks with a sequence-classification model, a user function or a URL."""

    def __init__(self, config: RewardConfig, device: str = "cpu") -> None:
        self.cfg = config
        self.http: HttpScorer | None = None
        self.takes_rows = False
        if config.function is not None:
            self.source = f"reward function {config.function}"
            self.score_fn: ScoreFn = import_function(config.function)
            self.takes_rows = takes_rows(self.score_fn)
        elif config.url is not None:
            self.source = f"reward endpoint {config.url}"
            self.http = HttpScorer.from_config(config)  # with its bearer token, if one is set
        else:
            self.source = f"reward model {config.model}"
            self.score_fn = ModelScorer(config.model, config.batch_size, device)

    def score(self, rollout: Rollout) -> Scores:
        """(B,) rewards for a rollout chunk, validated to be finite and one per sample.

        A function with a ``rows`` parameter (a verifier) also gets the chunk's prompt rows. A
        function may return named components (``{name: scores}``): each is validated and kept,
        and the reward is their sum weighted by ``reward.component_weights`` (1 by default).
        """
        start = time.perf_counter()
        prompts, responses = list(rollout.prompts), list(rollout.responses)
        if self.http is not None:
            raw = self.http.score(list(rollout.sample_ids), prompts, responses)
        elif self.takes_rows:
            raw = self.score_fn(prompts, responses, rows=rollout.rows)
        else:
            raw = self.score_fn(prompts, responses)
        ids, components = rollout.sample_ids, {}
        if isinstance(raw, Mapping):
            bad = [k for k in raw if not str(k).isidentifier() or k in RESERVED_COMPONENTS]
            if not raw or bad:
                raise RewardError(
                    f"{self.source} returned components {list(raw)}: expected at least one, "
                    f"named by identifiers other than {sorted(RESERVED_COMPONENTS)}"
                )
            components = {
                str(k): validate_scores(v, ids, f"{self.source} (component {k!r})")
                for k, v in raw.items()
            }
        else:
            rewards = validate_scores(raw, ids, self.source)
        if rollout.env_rewards is not None:  # a multi-turn environment's own contributions
            stats = rollout.episode_stats
            components = {
                **(components or {"score": rewards}),
                "env": rollout.env_rewards,
                "tool_call": ((stats["tool_calls"] > 0) & (stats["tool_errors"] == 0)).float(),
            }
        if components:
            weights = {**DEFAULT_WEIGHTS, **self.cfg.component_weights}
            rewards = sum(weights.get(k, 1.0) * v for k, v in components.items())
        return Scores(list(ids), rewards, time.perf_counter() - start, components)
