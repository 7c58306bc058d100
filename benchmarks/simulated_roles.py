"""Simulated role classes for control-plane benchmarks: no model, generation is a fixed sleep.

They have the method names and return types of the real roles (``rayrlhf.roles``), so the real
driver (:class:`rayrlhf.loops.online.OnlineTrainer`), actor groups (:mod:`rayrlhf.cluster`) and
experience buffer (:mod:`rayrlhf.buffer`) run unchanged on top of them:

- :class:`SimRolloutWorker` sleeps ``SimSettings.latency_s`` per chunk, then returns a
  :class:`~rayrlhf.experience.Rollout` of realistic size (random ids, masks, log-probs, text),
  stamped with the policy version it last loaded.
- :class:`SimRewardWorker` and :class:`SimReferenceWorker` answer at once (no model).
- :class:`SimLearner` resolves its shard of object refs with :func:`rayrlhf.buffer.fetch` (the
  object-store transfer is real), joins the chunks, checks the policy version like the real
  learner, does no training, and returns every metric key the driver and logger read. Its
  ``policy_state_dict`` is ``SimSettings.weights_mb`` of float32 tensors, so the weight sync
  moves a realistic amount of data through the object store to every rollout worker.

Settings travel to the actors through the environment variables in :data:`ENV` (set by the
benchmark before Ray starts, so every worker process inherits them): the constructors keep the
real roles' signatures.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from typing import Any

import ray
import torch

from rayrlhf.algos.off_policy import staleness_counts
from rayrlhf.buffer import fetch
from rayrlhf.config import Config, RewardConfig
from rayrlhf.experience import PromptChunk, ReferenceLogprobs, Rollout, Scores, join_chunks
from rayrlhf.weights.transport import FlatWeights, flatten_params, unflatten_params

H2D_BYTES_PER_S = 25e9  # PCIe 4 x16 host-to-device, roughly

ENV = {
    "latency_s": "RAYRLHF_SIM_LATENCY_S",
    "response_tokens": "RAYRLHF_SIM_RESPONSE_TOKENS",
    "weights_mb": "RAYRLHF_SIM_WEIGHTS_MB",
    "train_s": "RAYRLHF_SIM_TRAIN_S",
}
VOCAB = 49152  # SmolLM2's vocabulary size: only the id range, ids are random
TENSOR_MB = 2.0  # the simulated state dict is cut into tensors of this size (a model has many)


@dataclass(frozen=True)
class SimSettings:
    """What the simulation models: per-chunk generation latency, response length, weight size,
    and the learner's training time per step."""

    latency_s: float = 0.5
    response_tokens: int = 128
    weights_mb: float = 50.0
    train_s: float = 0.0

    @classmethod
    def from_env(cls) -> SimSettings:
        """The settings the benchmark exported (defaults for any variable not set)."""
        d = cls()
        return cls(
            latency_s=float(os.environ.get(ENV["latency_s"], d.latency_s)),
            response_tokens=int(os.environ.get(ENV["response_tokens"], d.response_tokens)),
            weights_mb=float(os.environ.get(ENV["weights_mb"], d.weights_mb)),
            train_s=float(os.environ.get(ENV["train_s"], d.train_s)),
        )

    def export(self) -> None:
        """Put the settings in this process's environment (inherited by Ray's workers)."""
        for field, var in ENV.items():
            os.environ[var] = str(getattr(self, field))


class SimRolloutWorker:
    """Rollout worker whose ``generate`` is a fixed-latency sleep followed by random tokens."""

    def __init__(self, config: Config, worker_index: int = 0) -> None:
        self.sim = SimSettings.from_env()
        self.prompt_tokens = config.rollout.max_prompt_tokens
        self.worker_index = worker_index
        self.seed = config.run.seed
        self.policy_version = 0

    def get_policy_version(self) -> int:
        """The version of the weights this worker 'generates' with now."""
        return self.policy_version

    def load_weights(self, weights: FlatWeights, version: int) -> int:
        """Map the learner's weights from the object store, then model the copy into params.

        The fetch and the zero-copy views are real (that is the object store's share). The copy
        into the worker's own parameters is worker-local device work (a host-to-GPU copy on a real
        cluster), so like generation it is simulated: a sleep at H2D_BYTES_PER_S. Done for real,
        32 workers would memcpy 32 copies on this machine's 2 shared cores.
        """
        unflatten_params(weights)
        time.sleep(weights.nbytes / H2D_BYTES_PER_S)
        self.policy_version = version
        return version

    def weights_checksum(self) -> float:
        """No weights are held: always 0.0 (kept for interface parity)."""
        return 0.0

    def generate(
        self, chunk: PromptChunk, version: int | None = None, weights: list | None = None
    ) -> Rollout:
        """Sleep the simulated latency, then return a Rollout of realistic shapes and sizes.

        ``version``/``weights`` as the real worker's: a chunk of another version first loads
        ``weights[0]`` (asynchronous training). Shapes: prompt (B, ``rollout.max_prompt_tokens``),
        response (B, ``response_tokens``); each row's response ends at a random length (its EOS),
        log-probs are 0 off the mask.
        """
        start = time.perf_counter()
        if version is not None and version != self.policy_version:
            self.load_weights(ray.get(weights[0]), version)
        time.sleep(self.sim.latency_s)
        seed = zlib.crc32(f"{self.seed}/{chunk.sample_ids[0]}".encode())  # by chunk, as real
        gen = torch.Generator().manual_seed(seed)
        b, p, r = len(chunk.sample_ids), self.prompt_tokens, self.sim.response_tokens
        lengths = torch.randint(r // 4, r + 1, (b,), generator=gen)
        mask = (torch.arange(r)[None, :] < lengths[:, None]).long()
        logprobs = -torch.rand(b, r, generator=gen) * 3.0 * mask
        return Rollout(
            sample_ids=list(chunk.sample_ids),
            policy_version=self.policy_version,
            prompt_ids=torch.randint(0, VOCAB, (b, p), generator=gen),
            prompt_mask=torch.ones(b, p, dtype=torch.long),
            response_ids=torch.randint(0, VOCAB, (b, r), generator=gen),
            response_mask=mask,
            logprobs=logprobs.float(),
            prompts=list(chunk.prompts),
            responses=["word " * int(n) for n in lengths],  # ~5 characters per token
            generate_seconds=time.perf_counter() - start,
        )


class SimRewardWorker:
    """Reward worker that scores instantly: the fraction of the response budget used."""

    def __init__(self, reward_config: RewardConfig, device: str = "cpu") -> None:
        self.device = device

    def score(self, rollout: Rollout) -> Scores:
        """One finite score per row: response length / padded response length."""
        start = time.perf_counter()
        rewards = rollout.response_mask.sum(-1).float() / rollout.response_mask.shape[1]
        return Scores(list(rollout.sample_ids), rewards, time.perf_counter() - start)


class SimReferenceWorker:
    """Reference worker that answers instantly with slightly shifted behaviour log-probs."""

    def __init__(self, config: Config) -> None:
        self.temperature = config.rollout.temperature

    def logprobs(self, rollout: Rollout) -> ReferenceLogprobs:
        """(B, R) 'reference' log-probs: the behaviour ones minus 0.01, 0 off the mask."""
        start = time.perf_counter()
        ref = (rollout.logprobs - 0.01) * rollout.response_mask
        return ReferenceLogprobs(list(rollout.sample_ids), ref, time.perf_counter() - start)


class SimLearner:
    """Learner rank that fetches and checks its shard for real and trains on nothing.

    Besides the real learner's metric keys it reports ``sim/ready_at`` (wall-clock time at which
    every ref of its shard was ready), ``time/wait_ready`` (from the call's start to then) and
    ``time/fetch`` (from then until the shard was in this process: the object transfer alone).
    """

    def __init__(self, config: Config, rank: int = 0) -> None:
        self.config = config
        self.rank = rank
        self.sim = SimSettings.from_env()
        self.policy_version = 0
        self.weights: dict[str, torch.Tensor] = {}

    @staticmethod
    def rendezvous_address(port: int = 0) -> tuple[str, int]:
        """No process group is formed: a placeholder address."""
        return "127.0.0.1", port

    def setup(self, master_addr: str, master_port: int) -> int:
        """Allocate the simulated policy weights (``weights_mb`` MB of float32); returns rank."""
        numel = int(TENSOR_MB * 2**20 / 4)
        total = int(self.sim.weights_mb * 2**20 / 4)
        self.weights = {
            f"layer.{i}.weight": torch.randn(min(numel, total - start))
            for i, start in enumerate(range(0, max(total, 1), numel))
        }
        return self.rank

    def train_step(
        self, rollouts: list, scores: list, refs: list, rows: list | None = None
    ) -> dict[str, Any]:
        """Fetch and join this rank's shard, check versions, return the step's metrics."""
        t0 = time.perf_counter()
        pending = [x for x in (*rollouts, *scores, *refs) if isinstance(x, ray.ObjectRef)]
        if pending:  # wait for the producers first, so the fetch below times the transfer alone
            ray.wait(pending, num_returns=len(pending), fetch_local=False)
        ready_at = time.time()
        t_ready = time.perf_counter()
        batch = join_chunks(fetch(rollouts), fetch(scores), fetch(refs), rows)
        t_fetch = time.perf_counter()
        k = self.config.rollout.max_staleness
        staleness = staleness_counts(batch.policy_versions, self.policy_version, k)
        time.sleep(self.sim.train_s)  # the simulated optimizer step
        self.policy_version += 1
        cfg, mask = self.config, batch.response_mask
        n, n_tok = float(len(batch)), float(mask.sum())
        kl = ((batch.logprobs - batch.ref_logprobs) * mask).sum().item()
        t_gen, t_score, t_ref = batch.phase_seconds
        return {
            "reward/mean": batch.scores.mean().item(),
            "reward/std": batch.scores.std(unbiased=False).item(),
            "kl/mean": kl / n,
            "kl/coef": cfg.online.kl_coef,
            "response/length": n_tok / n,
            "rollout/logprob_mismatch": 0.0,
            "rollout/nll": float(-batch.logprobs.sum()) / n_tok,
            "samples": n,
            "tokens/response": n_tok,
            "policy_version": self.policy_version,
            "time/generate": t_gen / cfg.rollout.num_workers,
            "time/score": t_score / cfg.reward.num_workers,
            "time/reference": t_ref / cfg.reference.num_workers,
            "time/wait_ready": t_ready - t0,
            "time/fetch": t_fetch - t_ready,
            "time/values": 0.0,
            "time/train": time.perf_counter() - t_fetch,
            "sim/ready_at": ready_at,
            "loss/policy": 0.0,
            "loss/value": 0.0,
            "policy/clip_fraction": 0.0,
            "policy/approx_kl": 0.0,
            "policy/entropy": 0.0,
            "value/clip_fraction": 0.0,
            "samples_text": [],
            **({f"staleness/{a}": float(c) for a, c in enumerate(staleness)} if k else {}),
        }

    def policy_state_dict(self) -> FlatWeights | None:
        """The simulated full weights on rank 0 (None elsewhere), packed like the real learner's."""
        if self.rank != 0:
            return None
        return flatten_params(
            self.weights.items(), [t.shape for t in self.weights.values()], torch.float32
        )

    def policy_checksum(self) -> float:
        """Sum of the simulated weights."""
        return float(sum(t.double().sum() for t in self.weights.values()))
