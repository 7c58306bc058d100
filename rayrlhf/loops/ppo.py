"""The PPO driver: the single controller. It moves object refs and small metrics, never batches.

One step::

    chunks  = prompts for this step, with stable sample ids
    rollout = rollout_worker[i % R].generate(chunk_i)          → ref
    scores  = reward_worker[i % S].score(rollout_i)            → ref
    ref_lp  = reference_worker[i % F].logprobs(rollout_i)      → ref
    metrics = learners.train(shard r = chunks r, r+L, ...)     (ranks fetch their refs)
    weights = learners.policy_weights()                        → ref, loaded by every rollout worker

Between steps the trainer applies resize requests (`set_rollout_workers`, or `rayrlhf scale`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from rayrlhf import cluster
from rayrlhf.buffer import ChunkRefs, ExperienceBuffer
from rayrlhf.config import Config, to_dict
from rayrlhf.data.prompts import PromptSource, load_prompts
from rayrlhf.loops import evaluation
from rayrlhf.metrics import RunLogger
from rayrlhf.roles.learner import Learner
from rayrlhf.roles.reference import ReferenceWorker
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker


@dataclass(frozen=True)
class Roles:
    """The class that plays each role (benchmarks swap in simulated ones)."""

    rollout: type = RolloutWorker
    reward: type = RewardWorker
    reference: type = ReferenceWorker
    learner: type = Learner


class PPOTrainer:
    """Builds the actor groups for a config and runs PPO steps."""

    def __init__(
        self, config: Config, run_dir: str | Path | None = None, roles: Roles = Roles()
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir or Path(config.run.output_dir) / config.run.name)
        prompts, self.data_report = load_prompts(
            config.data.prompts, config.data.prompt_key, config.data.max_bad_fraction
        )
        self.prompts = PromptSource(prompts, config.run.seed)
        cluster.ensure_ray(config)
        self.control = cluster.control_actor(config)
        # `rayrlhf scale` finds the Ray this run uses (perhaps one it started itself) here.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "ray_address").write_text(ray.get_runtime_context().gcs_address)
        self.learners = cluster.LearnerGroup(config, roles.learner)
        self.rollout = cluster.role_group(config, roles.rollout, "rollout", lambda i: (config, i))
        device = "cuda" if config.reward.num_gpus > 0 else "cpu"
        self.reward = cluster.role_group(
            config, roles.reward, "reward", lambda i: (config.reward, device)
        )
        self.reference = cluster.role_group(
            config, roles.reference, "reference", lambda i: (config,)
        )
        self.learners.wait_ready()
        self.sync_bytes = 0
        if config.weight_sync.method == "broadcast":
            self._form_sync_group()
        self.buffer = ExperienceBuffer()
        self.policy_version = 0
        self.weights: ray.ObjectRef | None = None  # the newest synced weights, for new workers
        self.step = 0

    def run(self, num_steps: int | None = None) -> list[dict[str, Any]]:
        """Run ``num_steps`` (default ``run.num_steps``) steps, logging each; returns metrics."""
        n = num_steps or self.config.run.num_steps
        logger = RunLogger(self.run_dir, to_dict(self.config), n, self.config.run.progress_bar)
        history = []
        try:
            for _ in range(n):
                requested = ray.get(self.control.take_request.remote())
                if requested is not None:
                    self.set_rollout_workers(requested)
                metrics = self.train_step()
                samples = metrics.pop("samples_text", [])
                logger.log(self.step, metrics, samples)
                history.append(metrics)
                self.control.report.remote(
                    {
                        "step": self.step,
                        "policy_version": self.policy_version,
                        "rollout_workers": len(self.rollout.actors),
                    }
                )
        finally:
            logger.close()
        return history

    def train_step(self) -> dict[str, Any]:
        """Generate → score and reference → train → weight sync; returns the step's metrics."""
        t0 = time.perf_counter()
        cfg = self.config.rollout
        chunks = self.prompts.step_chunks(self.step, cfg.prompts_per_step, cfg.chunk_size)
        # Chunks are dealt over the workers alive now: a resize rebalances the next step.
        rollout_actors = self.rollout.actors
        reward_actors, reference_actors = self.reward.actors, self.reference.actors
        for i, chunk in enumerate(chunks):
            rollout = rollout_actors[i % len(rollout_actors)].generate.remote(chunk)
            scores = reward_actors[i % len(reward_actors)].score.remote(rollout)
            reference = reference_actors[i % len(reference_actors)].logprobs.remote(rollout)
            self.buffer.add(ChunkRefs(tuple(chunk.sample_ids), rollout, scores, reference))
        metrics = self.learners.train(self.buffer.shards(self.config.learner.num_ranks))
        trained = self.buffer.mark_trained()
        t_train = time.perf_counter()
        self.sync_weights()
        t_end = time.perf_counter()
        self.step += 1
        metrics.update(
            {
                "time/weight_sync": t_end - t_train,
                "time/step": t_end - t0,
                "throughput/samples_per_s": trained / (t_end - t0),
                "throughput/tokens_per_s": metrics["tokens/response"] / (t_end - t0),
                "buffer/trained_total": self.buffer.trained_total,
                "data/prompts_skipped": self.data_report.skipped,
                "rollout/workers": len(rollout_actors),
                "sync/bytes": self.sync_bytes,
            }
        )
        return metrics

    def sync_weights(self) -> None:
        """Every rollout worker loads the learner's newest weights before generating again."""
        self.policy_version += 1
        if self.config.weight_sync.method == "broadcast":
            self._broadcast()
        else:
            self.weights = self.learners.policy_weights()
            self._load_weights(self.rollout.actors)
            # The size is object-store metadata: the driver never fetches the weights.
            info = ray.experimental.get_object_locations([self.weights])[self.weights]
            self.sync_bytes = info.get("object_size") or 0

    def _load_weights(self, workers: list[Any]) -> None:
        if self.weights is None or not workers:  # at version 0 workers hold the initial policy
            return
        self._check_versions(
            ray.get([w.load_weights.remote(self.weights, self.policy_version) for w in workers])
        )

    def _form_sync_group(self) -> None:
        """(Re)build the broadcast group: learner rank 0 plus the rollout workers alive now."""
        rank0, workers = self.learners.actors[0], self.rollout.actors
        host, port = ray.get(rank0.rendezvous_address.remote(0))
        world = len(workers) + 1
        ray.get(
            [
                rank0.join_sync_group.remote(host, port, world),
                *(
                    w.join_sync_group.remote(host, port, i + 1, world)
                    for i, w in enumerate(workers)
                ),
            ]
        )

    def _broadcast(self) -> None:
        sends = [a.broadcast_policy.remote() for a in self.learners.actors]
        receives = [w.receive_weights.remote(self.policy_version) for w in self.rollout.actors]
        self._check_versions(ray.get(receives))
        self.sync_bytes = ray.get(sends)[0]

    def _check_versions(self, versions: list[int]) -> None:
        if set(versions) != {self.policy_version}:
            raise RuntimeError(
                f"rollout workers report versions {versions}, expected {self.policy_version}"
            )

    def set_rollout_workers(self, count: int) -> None:
        """Resize the rollout role to ``count`` workers between steps.

        New workers load the current weights before they generate; removed workers are the newest
        ones and hold no unfinished chunk (a step's chunks are all trained before this runs).
        """
        if count < 1:
            raise ValueError(f"rollout worker count must be at least 1, got {count}")
        if self.buffer.pending:
            raise RuntimeError("resize requested while a step's chunks are in flight")
        current = len(self.rollout.actors)
        if count == current:
            return
        added = self.rollout.add(count - current) if count > current else []
        if count < current:
            self.rollout.remove(current - count)
        if self.config.weight_sync.method == "broadcast":
            self._form_sync_group()
            if added and self.policy_version > 0:
                self._broadcast()  # the current version again, now reaching the new workers
        else:
            self._load_weights(added)

    def evaluate(self, prompts: list[str]) -> dict[str, Any]:
        """Held-out metrics of the current policy: reward, KL to the reference, samples.

        Uses the rollout, reward and reference workers; the same ``eval-i`` sample ids (hence
        the same sampling seeds) every call, so before/after numbers are a paired comparison.
        """
        chunks = evaluation.eval_chunks(prompts, self.config.rollout.chunk_size)
        rollout, reward, reference = self.rollout.actors, self.reward.actors, self.reference.actors
        parts = []
        for i, chunk in enumerate(chunks):
            generated = rollout[i % len(rollout)].generate.remote(chunk)
            parts.append(
                cluster.summarize_chunk.remote(
                    generated,
                    reward[i % len(reward)].score.remote(generated),
                    reference[i % len(reference)].logprobs.remote(generated),
                )
            )
        samples = [s for part in ray.get(parts) for s in part]
        return {
            **evaluation.aggregate(samples),
            "policy_version": self.policy_version,
            "samples_text": samples,
        }

    def save_policy(self, path: str | Path) -> Path:
        """Write the current policy (and tokenizer) as a Hugging Face folder."""
        self.learners.save_policy(str(path))
        return Path(path)

    def shutdown(self) -> None:
        """Stop this trainer's actors and placement groups (Ray itself keeps running)."""
        for group in (self.rollout, self.reward, self.reference):
            group.shutdown()
        self.learners.shutdown()
        cluster.release_control(self.config, self.control)
