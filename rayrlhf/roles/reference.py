"""ReferenceWorker: log-probs of the frozen initial policy, anchoring the KL penalty."""

from __future__ import annotations

import time

import torch

from rayrlhf.config import Config
from rayrlhf.experience import ReferenceLogprobs, Rollout
from rayrlhf.models import load_policy, response_logprobs


class ReferenceWorker:
    """Holds the initial policy, never updated."""

    def __init__(self, config: Config) -> None:
        self.device = torch.device(config.learner.device)
        self.temperature = config.rollout.temperature
        self.model = load_policy(config.model.policy, config.learner.precision).to(self.device)
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def logprobs(self, rollout: Rollout) -> ReferenceLogprobs:
        """(B, R) reference log-probs of the chunk's response tokens, 0 off the response mask."""
        start = time.perf_counter()
        logprobs, _ = response_logprobs(
            self.model,
            rollout.input_ids.to(self.device),
            rollout.attention_mask.to(self.device),
            rollout.prompt_ids.shape[1],
            self.temperature,
        )
        logprobs = logprobs.cpu() * rollout.response_mask
        return ReferenceLogprobs(list(rollout.sample_ids), logprobs, time.perf_counter() - start)
