"""RolloutWorker: generates responses for chunks of prompts with the current policy weights."""

from __future__ import annotations

import time
import zlib
from typing import Any

import ray
import torch

from rayrlhf.config import Config
from rayrlhf.data.encode import fit_prompt
from rayrlhf.envs import load_environment
from rayrlhf.envs.batch import EnvBatch, LocalEnvs
from rayrlhf.experience import PromptChunk, Rollout, response_mask_from_ids
from rayrlhf.generation import make_engine
from rayrlhf.generation.episodes import run_episodes
from rayrlhf.models import load_tokenizer
from rayrlhf.roles.environment import RemoteEnvs
from rayrlhf.weights.transport import BroadcastGroup, FlatWeights, receive_params, unflatten_params


class RolloutWorker:
    """Holds a generation engine (``rollout.backend``) with a copy of the policy.

    The weights carry a ``policy_version``; every rollout is stamped with the version it was
    generated with, which the learner checks against the versions it accepts.
    """

    def __init__(self, config: Config, worker_index: int = 0) -> None:
        self.cfg = config.rollout
        self.worker_index = worker_index
        self.device = torch.device(config.learner.device)
        self.tokenizer = load_tokenizer(config.tokenizer_path)
        self.engine = make_engine(config, self.tokenizer)
        self.policy_version = 0
        self.seed = config.run.seed
        self.bucket_bytes = int(config.weight_sync.bucket_mb * 2**20)
        self.backend = config.learner.backend
        self.sync_group: BroadcastGroup | None = None
        self.load_seconds = 0.0  # the last weight load, for the backend benchmark
        env = self.cfg.environment
        # With environment workers the environments run there: nothing of them is loaded here.
        local = env is not None and not config.env_workers.num_workers
        self.env_cls = load_environment(env) if local else None
        self.env_timeout_s = config.env_workers.call_timeout_s

    def get_policy_version(self) -> int:
        """The version of the weights this worker generates with now."""
        return self.policy_version

    def load_weights(self, weights: FlatWeights | dict[str, torch.Tensor], version: int) -> int:
        """Replace the policy weights with the learner's version ``version``; returns it."""
        start = time.perf_counter()
        self.engine.wake()
        named = unflatten_params(weights) if isinstance(weights, FlatWeights) else weights
        self.engine.load_weights(named)
        self.policy_version = version
        self.load_seconds = time.perf_counter() - start
        return version

    def join_sync_group(self, host: str, port: int, rank: int, world_size: int) -> int:
        """Join the weight broadcast group as ``rank`` (learner rank 0 is group rank 0)."""
        self.sync_group = BroadcastGroup(self.backend, host, port, rank, world_size)
        return rank

    def receive_weights(self, version: int) -> int:
        """Receive the learner's broadcast of version ``version`` into the engine; returns it."""
        if self.sync_group is None:
            raise RuntimeError("receive_weights before join_sync_group")
        self.engine.wake()
        stream = receive_params(
            self.sync_group,
            self.engine.named_shapes(),
            self.engine.dtype,
            self.bucket_bytes,
            self.device,
        )
        self.engine.load_weights(stream)
        self.policy_version = version
        return version

    def weights_checksum(self) -> float:
        """Sum of all parameters: a cheap equality check against the learner's weights."""
        return self.engine.checksum()

    def sleep(self) -> None:
        """Release the engine's memory until the next load or generate (vLLM sleep mode)."""
        self.engine.sleep()

    @torch.no_grad()
    def generate(
        self,
        chunk: PromptChunk,
        version: int | None = None,
        weights: list[Any] | None = None,
        env_worker: Any = None,
    ) -> Rollout:
        """Sample one response per row of ``chunk`` (a group's rows share a prompt and differ).

        ``version``: the policy version this chunk must be generated with (asynchronous
        training); when this worker holds another, it first loads ``weights[0]``, an object ref
        (wrapped in a list so Ray passes it unresolved) to that version's weights. Loading
        happens here, between chunks, never in the middle of one. ``env_worker``: the
        environment worker that runs this chunk's environments (``env_workers``); None runs
        them here.

        Returns a :class:`Rollout` with prompt ids (B, P), response ids (B, R), the response mask
        (up to and including EOS) and behaviour log-probs (B, R) at the sampling temperature.
        """
        start = time.perf_counter()
        if version is not None and version != self.policy_version:
            if not weights:
                raise RuntimeError(
                    f"chunk {chunk.sample_ids[0]!r} needs policy version {version}, this worker "
                    f"holds {self.policy_version} and was sent no weights"
                )
            self.load_weights(ray.get(weights[0]), version)
        self.engine.wake()
        envs = self._environments(chunk, env_worker)
        try:
            return self._sample(chunk, envs, start)
        finally:
            if envs is not None:  # the episodes are over, or the chunk failed: free them
                envs.close()

    def _sample(self, chunk: PromptChunk, envs: EnvBatch | None, start: float) -> Rollout:
        """The chunk's rollout: one turn per row, or one episode per row of ``envs``."""
        tok, c = self.tokenizer, self.cfg
        firsts = chunk.prompts if envs is None else envs.firsts
        ids = [
            fit_prompt(tok, p, c.template, c.plain_template, c.max_prompt_tokens) for p in firsts
        ]
        if min(len(i) for i in ids) == 0:
            raise ValueError(f"empty prompt in chunk starting at {chunk.sample_ids[0]!r}")
        enc = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")  # on the left
        prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]
        # Seeded by the chunk (HF) or by each sample (vLLM), never by the worker: a chunk re-run
        # on another worker (after a failure, a resize or a resume) samples the same responses.
        chunk_seed = zlib.crc32(f"{self.seed}/{chunk.sample_ids[0]}".encode())
        row_seeds = [zlib.crc32(f"{self.seed}/{sid}".encode()) for sid in chunk.sample_ids]
        episodes = None
        if envs is None:
            response_ids, logprobs = self.engine.generate(
                prompt_ids, prompt_mask, chunk_seed, row_seeds
            )
            mask = attention = response_mask_from_ids(response_ids, tok.eos_token_id)
        else:
            limits = (c.max_turns, c.max_new_tokens, c.response_budget)
            episodes = run_episodes(self.engine, tok, envs, ids, chunk_seed, row_seeds, limits)
            response_ids, logprobs = episodes.response_ids, episodes.logprobs
            mask, attention = episodes.response_mask, episodes.response_attention
        responses = tok.batch_decode(
            response_ids * attention + tok.pad_token_id * (1 - attention),
            skip_special_tokens=True,
        )
        return Rollout(
            sample_ids=list(chunk.sample_ids),
            policy_version=self.policy_version,
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=response_ids,
            response_mask=mask,
            logprobs=logprobs * mask,
            prompts=list(chunk.prompts),
            responses=responses,
            generate_seconds=time.perf_counter() - start,
            group_size=chunk.group_size,
            rows=chunk.rows,
            response_attention=None if episodes is None else attention,
            episode_stats={} if episodes is None else episodes.stats,
            env_rewards=None if episodes is None else episodes.rewards,
        )

    def _environments(self, chunk: PromptChunk, env_worker: Any) -> EnvBatch | None:
        """The chunk's environments, one per row, reset on its prompt row and sample id: on
        ``env_worker`` when given, else here (None: single-turn, no environment)."""
        if env_worker is None and self.env_cls is None:
            if self.cfg.environment is not None:  # never a silent single-turn chunk
                raise ValueError(
                    f"chunk {chunk.sample_ids[0]!r}: rollout.environment runs on environment "
                    "workers (env_workers.num_workers > 0), and this call named none"
                )
            return None
        sids = list(chunk.sample_ids)
        rows = [{"prompt": p, **(r or {})} for p, r in zip(
            chunk.prompts, chunk.rows or [None] * len(sids), strict=True)]  # fmt: skip
        if env_worker is not None:
            return RemoteEnvs(env_worker, sids[0], rows, sids, self.env_timeout_s)
        return LocalEnvs(self.env_cls, rows, sids)
