"""ReferenceWorker: log-probs of the frozen initial policy, anchoring the KL penalty."""

from __future__ import annotations

import time

import torch

from rayrlhf.config import Config
from rayrlhf.experience import ReferenceLogprobs, Rollout
from rayrlhf.forward import response_logprobs
from rayrlhf.micro_batches import local_micro_batches, row_costs
from rayrlhf.models import load_policy


class ReferenceWorker:
    """Holds the initial policy, never updated."""

    def __init__(self, config: Config) -> None:
        self.device = torch.device(config.learner.device)
        self.temperature = config.rollout.temperature
        self.model = load_policy(config.model.policy, config.learner.precision).to(self.device)
        self.model.eval().requires_grad_(False)
        self.packing = config.reference.packing
        self.max_tokens = config.reference.max_tokens_per_micro_batch

    @torch.no_grad()
    def logprobs(self, rollout: Rollout) -> ReferenceLogprobs:
        """(B, R) reference log-probs of the chunk's response tokens, 0 off the response mask."""
        start = time.perf_counter()
        ids, am, p = rollout.input_ids, rollout.attention_mask, rollout.prompt_ids.shape[1]
        logprobs = torch.zeros(rollout.response_mask.shape)
        rows, costs = torch.arange(len(rollout)), row_costs(am, self.packing)
        for idx in local_micro_batches(rows, costs, self.max_tokens, len(rollout)):
            lp, _ = response_logprobs(
                self.model,
                ids[idx].to(self.device),
                am[idx].to(self.device),
                p,
                self.temperature,
                packed=self.packing,
            )
            logprobs[idx] = lp.float().cpu()
        logprobs = logprobs.cpu() * rollout.response_mask
        return ReferenceLogprobs(list(rollout.sample_ids), logprobs, time.perf_counter() - start)
