"""The PPO driver: the single controller. It moves object refs and small metrics, never batches.

One step::

    chunks  = prompts for this step, with stable sample ids
    rollout = rollout_worker[i % R].generate(chunk_i)          → ref
    scores  = reward_worker[i % S].score(rollout_i)            → ref
    ref_lp  = reference_worker[i % F].logprobs(rollout_i)      → ref
    metrics = learners.train(shard r = chunks r, r+L, ...)     (ranks fetch their refs)
    weights = learners.policy_weights()                        → ref, loaded by every rollout worker
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray

from rayrlhf import cluster
from rayrlhf.buffer import ChunkRefs, ExperienceBuffer, SampleState
from rayrlhf.config import Config, to_dict
from rayrlhf.data.prompts import PromptSource, load_prompts
from rayrlhf.metrics import RunLogger


class PPOTrainer:
    """Builds the actor groups for a config and runs PPO steps."""

    def __init__(self, config: Config, run_dir: str | Path | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir or Path(config.run.output_dir) / config.run.name)
        prompts, self.data_report = load_prompts(
            config.data.prompts, config.data.prompt_key, config.data.max_bad_fraction
        )
        self.prompts = PromptSource(prompts, config.run.seed)
        cluster.ensure_ray(config)
        self.learners = cluster.LearnerGroup(config)
        self.rollout = cluster.rollout_actors(config)
        self.reward = cluster.reward_actors(config)
        self.reference = cluster.reference_actors(config)
        self.learners.wait_ready()
        self.buffer = ExperienceBuffer()
        self.policy_version = 0
        self.step = 0

    def run(self, num_steps: int | None = None) -> list[dict[str, Any]]:
        """Run ``num_steps`` (default ``run.num_steps``) steps, logging each; returns metrics."""
        n = num_steps or self.config.run.num_steps
        logger = RunLogger(self.run_dir, to_dict(self.config), n, self.config.run.progress_bar)
        history = []
        try:
            for _ in range(n):
                metrics = self.train_step()
                samples = metrics.pop("samples_text", [])
                logger.log(self.step, metrics, samples)
                history.append(metrics)
        finally:
            logger.close()
        return history

    def train_step(self) -> dict[str, Any]:
        """Generate → score and reference → train → weight sync; returns the step's metrics."""
        t0 = time.perf_counter()
        cfg = self.config.rollout
        chunks = self.prompts.step_chunks(self.step, cfg.prompts_per_step, cfg.chunk_size)
        for i, chunk in enumerate(chunks):
            rollout = self.rollout[i % len(self.rollout)].generate.remote(chunk)
            scores = self.reward[i % len(self.reward)].score.remote(rollout)
            reference = self.reference[i % len(self.reference)].logprobs.remote(rollout)
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
                "buffer/trained_total": self.buffer.count(SampleState.TRAINED),
                "data/prompts_skipped": self.data_report.skipped,
            }
        )
        return metrics

    def sync_weights(self) -> None:
        """Every rollout worker loads the learner's newest weights before generating again."""
        self.policy_version += 1
        weights = self.learners.policy_weights()
        versions = ray.get(
            [w.load_weights.remote(weights, self.policy_version) for w in self.rollout]
        )
        if set(versions) != {self.policy_version}:
            raise RuntimeError(
                f"rollout workers report versions {versions}, expected {self.policy_version}"
            )

    def shutdown(self) -> None:
        """Stop this trainer's actors (Ray itself keeps running)."""
        for actor in [*self.learners.actors, *self.rollout, *self.reward, *self.reference]:
            ray.kill(actor)
