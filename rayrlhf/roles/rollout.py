"""RolloutWorker: generates responses for chunks of prompts with the current policy weights."""

from __future__ import annotations

import time
import zlib

import torch

from rayrlhf.algos.losses import logprobs_from_logits
from rayrlhf.config import Config
from rayrlhf.data.encode import fit_prompt
from rayrlhf.experience import PromptChunk, Rollout, response_mask_from_ids
from rayrlhf.models import load_policy, load_tokenizer
from rayrlhf.weight_sync import (
    BroadcastGroup,
    FlatWeights,
    load_full_state_dict,
    receive_params,
    unflatten_params,
)


class RolloutWorker:
    """Holds a copy of the policy; generates batched, left-padded, with the KV cache.

    The weights carry a ``policy_version``; every rollout is stamped with the version it was
    generated with, which the learner checks against the one it expects.
    """

    def __init__(self, config: Config, worker_index: int = 0) -> None:
        self.cfg = config.rollout
        self.worker_index = worker_index
        self.device = torch.device(config.learner.device)
        self.tokenizer = load_tokenizer(config.tokenizer_path)
        self.model = load_policy(config.model.policy, config.learner.precision).to(self.device)
        self.model.eval().requires_grad_(False)  # never trained here; weights come from sync
        self.policy_version = 0
        self.seed = config.run.seed
        self.bucket_bytes = int(config.weight_sync.bucket_mb * 2**20)
        self.backend = config.learner.backend
        self.sync_group: BroadcastGroup | None = None

    def get_policy_version(self) -> int:
        """The version of the weights this worker generates with now."""
        return self.policy_version

    def load_weights(self, weights: FlatWeights | dict[str, torch.Tensor], version: int) -> int:
        """Replace the policy weights with the learner's version ``version``; returns it."""
        if isinstance(weights, FlatWeights):
            weights = unflatten_params(weights)
        load_full_state_dict(self.model, weights)
        self.policy_version = version
        return version

    def join_sync_group(self, host: str, port: int, rank: int, world_size: int) -> int:
        """Join the weight broadcast group as ``rank`` (learner rank 0 is group rank 0)."""
        self.sync_group = BroadcastGroup(self.backend, host, port, rank, world_size)
        return rank

    def receive_weights(self, version: int) -> int:
        """Receive the learner's broadcast of version ``version``; returns it."""
        if self.sync_group is None:
            raise RuntimeError("receive_weights before join_sync_group")
        receive_params(self.sync_group, self.model, self.bucket_bytes, self.device)
        self.policy_version = version
        return version

    def weights_checksum(self) -> float:
        """Sum of all parameters: a cheap equality check against the learner's weights."""
        return float(sum(p.double().sum() for p in self.model.parameters()))

    @torch.no_grad()
    def generate(self, chunk: PromptChunk) -> Rollout:
        """Sample one response per row of ``chunk`` (a group's rows share a prompt and differ).

        Returns a :class:`Rollout` with prompt ids (B, P), response ids (B, R), the response mask
        (up to and including EOS) and behaviour log-probs (B, R) at the sampling temperature.
        """
        start = time.perf_counter()
        tok, c = self.tokenizer, self.cfg
        ids = [
            fit_prompt(tok, p, c.template, c.plain_template, c.max_prompt_tokens)
            for p in chunk.prompts
        ]
        if min(len(i) for i in ids) == 0:
            raise ValueError(f"empty prompt in chunk starting at {chunk.sample_ids[0]!r}")
        enc = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")  # on the left
        prompt_ids = enc["input_ids"].to(self.device)
        prompt_mask = enc["attention_mask"].to(self.device)
        # Seeded by the chunk, not the worker: a chunk re-run on another worker (after a failure,
        # a resize or a resume) samples the same responses.
        torch.manual_seed(zlib.crc32(f"{self.seed}/{chunk.sample_ids[0]}".encode()))
        out = self.model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            do_sample=True,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            top_k=0,  # the sampled distribution must be the policy's, not a top-k cut of it
            max_new_tokens=self.cfg.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=True,
        )
        response_ids = out.sequences[:, prompt_ids.shape[1] :]
        mask = response_mask_from_ids(response_ids.cpu(), tok.eos_token_id).to(self.device)
        logits = torch.stack(out.logits, dim=1) / self.cfg.temperature  # (B, R, V)
        logprobs = logprobs_from_logits(logits, response_ids) * mask
        responses = tok.batch_decode(
            response_ids * mask + tok.pad_token_id * (1 - mask), skip_special_tokens=True
        )
        return Rollout(
            sample_ids=list(chunk.sample_ids),
            policy_version=self.policy_version,
            prompt_ids=prompt_ids.cpu(),
            prompt_mask=prompt_mask.cpu(),
            response_ids=response_ids.cpu(),
            response_mask=mask.cpu(),
            logprobs=logprobs.float().cpu(),
            prompts=list(chunk.prompts),
            responses=responses,
            generate_seconds=time.perf_counter() - start,
            group_size=chunk.group_size,
        )
