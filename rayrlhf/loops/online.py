"""The online driver (PPO, GRPO, RLOO, REINFORCE++ and variants): the single controller. It moves
object refs and small metrics, never batches.

One step::

    chunks  = prompts for this step (× group_size samples each), with stable sample ids
    rollout = rollout_worker[i % R].generate(chunk_i)          → ref (+ receipt)
    scores  = reward_worker[i % S].score(rollout_i)            → ref (+ receipt)
    ref_lp  = reference_worker[i % F].logprobs(rollout_i)      → ref (+ receipt; none if β = 0)
    (dynamic sampling: drop all-equal groups, generate more prompts until the step is full)
    metrics = learners.train(shard r = chunks r, r+L, ...)     (ranks fetch their refs)
    weights = learners.policy_weights()                        → ref, loaded by every rollout worker

The algorithm is data (:attr:`Config.algo`): the learner reads it; this loop is the same for all.
The run around the steps (stop signals, checkpoints, learner restarts, failures) is the step
loop's (:mod:`rayrlhf.controller.step_loop`), the same for every driver; prompts and steps in
flight are the sampler's (:mod:`rayrlhf.controller.sampler`), the weights' way to the rollout
workers the publisher's (:mod:`rayrlhf.weights.publisher`). Between steps the trainer applies
resize requests (`set_rollout_workers`, or `rayrlhf scale`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from rayrlhf import cluster, control, resume
from rayrlhf.buffer import ExperienceBuffer
from rayrlhf.checkpoint import Checkpoint
from rayrlhf.config import Config, ConfigError, to_dict
from rayrlhf.controller.chunks import ChunkRunner
from rayrlhf.controller.heldout import evaluate_chunks
from rayrlhf.controller.run_state import (
    RunState,
    learner_entries,
    load_run_state,
    save_run_state,
)
from rayrlhf.controller.sampler import StepSampler
from rayrlhf.controller.step_loop import StepLoop
from rayrlhf.data.prompts import PromptSource, prompt_table
from rayrlhf.faults import FaultCounts
from rayrlhf.ilql_model import is_ilql_folder
from rayrlhf.metrics import RunLogger
from rayrlhf.roles.learner import Learner
from rayrlhf.roles.reference import ReferenceWorker
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker
from rayrlhf.weights.publisher import WeightPublisher


@dataclass(frozen=True)
class Roles:
    """The class that plays each role (benchmarks swap in simulated ones)."""

    rollout: type = RolloutWorker
    reward: type = RewardWorker
    reference: type = ReferenceWorker
    learner: type = Learner


class OnlineTrainer:
    """Builds the actor groups for a config, resumes from its newest checkpoint, runs steps."""

    label = ""  # the step loop's messages need no prefix: the run is the trainer's

    def __init__(
        self, config: Config, run_dir: str | Path | None = None, roles: Roles = Roles()
    ) -> None:
        if is_ilql_folder(config.model.policy):
            raise ConfigError(
                f"model.policy {config.model.policy} is an ILQL policy (LM plus Q and V heads), "
                "which decodes with its heads; online training trains the LM alone: give its "
                "plain LM folder (or the SFT model) instead"
            )
        self.config, self.roles = config, roles
        self.run_dir = Path(run_dir or Path(config.run.output_dir) / config.run.name)
        self.checkpoints = self.run_dir / "checkpoints"
        prompts, rows, self.data_report = prompt_table(config.data)
        # Hashed once: every checkpoint of the run records what the run read.
        self.data_digests = resume.data_digests(to_dict(config))
        # Refused before any actor starts: a damaged checkpoint or a changed config costs seconds.
        shape = (config.learner.num_ranks, config.learner.zero_stage)
        found = resume.starting_checkpoint(
            self.checkpoints,
            config.run.resume,
            to_dict(config),
            shape,
            "learner",
            data=self.data_digests,
        )
        cluster.ensure_ray(config)
        self.control = control.control_actor(config)
        # `rayrlhf scale` finds the Ray this run uses (perhaps one it started itself) here.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "ray_address").write_text(ray.get_runtime_context().gcs_address)
        self.faults = FaultCounts()
        self.learners = cluster.LearnerGroup(config, roles.learner)
        self.rollout = cluster.role_group(config, roles.rollout, "rollout", lambda i: (config, i))
        device = "cuda" if config.reward.num_gpus > 0 else "cpu"
        self.reward = cluster.role_group(
            config, roles.reward, "reward", lambda i: (config.reward, device)
        )
        # Environment workers, if any (else the rollout workers run the environments).
        self.groups = {"rollout": self.rollout, "reward": self.reward, **cluster.env_groups(config)}
        # With a KL coefficient of 0 nothing reads reference log-probs; with reference.mode
        # learner the learners compute them (LoRA adapters disabled) and get refs of None.
        if config.reference_workers:
            self.groups["reference"] = cluster.role_group(
                config, roles.reference, "reference", lambda i: (config,)
            )
        self.runner = ChunkRunner(
            self.groups,
            self.faults,
            config.run.max_worker_restarts,
            config.timeouts.rollout_s,
            self._bring_up_to_date,
        )
        self.learners.wait_ready()
        self.publisher = WeightPublisher(config, self.rollout, self.runner.replace)
        self.publisher.attach(self.learners)
        self.sampler = StepSampler(
            config, PromptSource(prompts, config.run.seed, rows), self.runner, self.publisher
        )
        self.state = RunState()
        self.between_steps = True  # the learners hold the state after self.step
        self.loop = StepLoop(self, config.run.checkpoint_every, config.run.max_learner_restarts)
        self.resumed_from = found
        if found is not None:
            self._restore(found)
            vars(self.faults).update(self.state.faults)  # what the run survived so far
            self.publisher.publish(self.policy_version, self.step)
            print(f"[rayrlhf] resumed from {found.path} (step {self.step})", flush=True)

    @property
    def step(self) -> int:
        """Steps completed."""
        return self.state.step

    @property
    def policy_version(self) -> int:
        """The version of the policy the learners hold (and the rollout workers, once synced)."""
        return self.state.policy_version

    @property
    def buffer(self) -> ExperienceBuffer:
        """The ledger of every sample of the run and the chunks of the step in hand."""
        return self.sampler.buffer

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, num_steps: int | None = None) -> list[dict[str, Any]]:
        """Run ``num_steps`` more steps (default: until ``run.num_steps``); returns their metrics.

        Raises :class:`RunStopped` after a SIGINT/SIGTERM (with a checkpoint written) and
        :class:`RunFailed` on an error it cannot get past (with a checkpoint where possible).
        """
        c = self.config
        target = self.step + num_steps if num_steps else c.run.num_steps
        logger = RunLogger(
            self.run_dir,
            to_dict(c),
            c.run.num_steps,
            c.run.progress_bar,
            desc=c.algorithm.name,
            position=self.state.logs,
        )
        ok = False
        try:
            rows = self.loop.steps(target, logger)
            ok = True
            return rows
        finally:
            logger.close(ok)

    def train_step(self) -> dict[str, Any]:
        """Generate → score and reference → train → publish the new policy; the step's metrics.

        With ``rollout.max_staleness`` k > 0 the sampler has the steps up to k ahead generating
        with the current policy version while this one trains.
        """
        t0 = time.perf_counter()
        workers = len(self.rollout.actors)  # chunks are dealt over the workers alive now
        sampling = self.sampler.collect(self.step, self.policy_version)
        if self.config.rollout.vllm.sleep_between_steps and not self.publisher.ahead:
            for worker in self.rollout.actors:  # the learners get the memory while they train
                worker.sleep.remote()
        t_collect = time.perf_counter()
        self.between_steps = False
        metrics = self.learners.train(self.buffer.shards(self.config.learner.num_ranks))
        trained = self.buffer.mark_trained()
        self.state.step += 1
        self.state.policy_version = int(metrics["policy_version"])
        self.between_steps = True
        t_train = time.perf_counter()
        self.publisher.publish(self.policy_version, self.step)
        seconds = time.perf_counter() - t0
        if self.publisher.ahead:
            metrics["async/steps_ahead"] = len(self.sampler.ahead)
            metrics["time/wait_rollouts"] = t_collect - t0  # generation not hidden by training
        metrics.update(
            {
                "time/weight_sync": time.perf_counter() - t_train,
                "throughput/samples_per_s": trained / seconds,
                "throughput/tokens_per_s": metrics["tokens/response"] / seconds,
                "buffer/trained_total": self.buffer.trained_total,
                "data/prompts_skipped": self.data_report.skipped,
                "rollout/workers": workers,
                "sync/bytes": self.publisher.bytes,
                **sampling,
            }
        )
        return metrics

    def _bring_up_to_date(self, role: str, actor: Any) -> None:
        """A new actor of ``role`` gets the current policy version before it works."""
        if role == "rollout":  # reward and reference workers hold nothing that changes
            self.publisher.joined([actor], self.policy_version)

    # ---- between steps: resizing and status ---------------------------------------------------

    def before_step(self) -> None:
        """Apply a resize request (`rayrlhf scale`), if one came."""
        requested = ray.get(self.control.take_request.remote(), timeout=60)
        if requested is not None:
            self.set_rollout_workers(requested)

    def after_step(self) -> None:
        """Report the status `rayrlhf scale --status` shows."""
        self.control.report.remote(
            {
                "step": self.step,
                "policy_version": self.policy_version,
                "rollout_workers": len(self.rollout.actors),
            }
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
        if count < current:
            self.sampler.settle()  # chunks dispatched ahead finish before their workers go
        added = self.rollout.add(count - current) if count > current else []
        if count < current:
            self.rollout.remove(current - count)
        self.publisher.joined(added, self.policy_version)

    # ---- checkpoints and restarts (called by the step loop) -----------------------------------

    def save_checkpoint(self) -> Path:
        """Commit a checkpoint of the state after the current step; returns its folder."""
        self.state.prompt_cursor, self.state.in_flight = self.sampler.position()
        used = {int(f["version"]) for f in self.state.in_flight}
        lc = self.config.learner
        return save_run_state(
            self.checkpoints,
            self.state,
            self.buffer,
            lambda path: self.learners.save_checkpoint(str(path)),
            {
                "kind": "ppo",
                "world_size": lc.num_ranks,
                "zero_stage": lc.zero_stage,
                "config": to_dict(self.config),
                "data": self.data_digests,
            },
            self.config.run.keep_checkpoints,
            lambda folder: self.publisher.save(folder, used),
        )

    def before_failure_checkpoint(self) -> None:
        """Samples of a step that will be dispatched again are no longer in flight."""
        self.sampler.abandon_uncollected()

    def _restore(self, found: Checkpoint | None) -> None:
        """Learners, ledger, step, version, prompts and logs back to ``found`` (None: start).

        The rollout workers still hold other weights: the caller publishes the policy.
        """
        if found is None:
            self.state = RunState()
            self.sampler.reset(ExperienceBuffer(), 0)
            return
        self.learners.load_checkpoint(str(found.path / "learner"), learner_entries(found))
        buffer = ExperienceBuffer()
        self.state = load_run_state(found.path, buffer)
        self.publisher.load(found.path, {int(f["version"]) for f in self.state.in_flight})
        self.sampler.restore(buffer, self.state.prompt_cursor, self.state.in_flight)

    def restart_learners(self, found: Checkpoint | None) -> None:
        """A new learner group, rolled back to ``found``; the rollout workers follow."""
        self.learners.shutdown()
        self.learners = cluster.LearnerGroup(
            self.config, self.roles.learner, generation=self.faults.learner_restarts
        )
        self.learners.wait_ready()
        self.publisher.attach(self.learners)
        self._restore(found)
        self.publisher.publish(self.policy_version, self.step)  # the restored policy, everywhere
        self.between_steps = True

    # ---- evaluation and saving ------------------------------------------------------------

    def evaluate(
        self, prompts: list[str], rows: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Held-out metrics of the current policy: reward, KL to the reference, samples.

        Uses the rollout, reward and reference workers; the same ``eval-i`` sample ids (hence
        the same sampling seeds) every call, so before/after numbers are a paired comparison.
        """
        version, weights = self.publisher.for_dispatch(self.policy_version)
        c = self.config
        metrics = evaluate_chunks(
            self.runner, prompts, c.rollout.chunk_size, c.timeouts.rollout_s, version, weights, rows
        )
        return {**metrics, "policy_version": self.policy_version}

    def save_policy(self, path: str | Path) -> Path:
        """Write the current policy (and tokenizer) as a Hugging Face folder."""
        self.learners.save_policy(str(path))
        return Path(path)

    def shutdown(self) -> None:
        """Stop this trainer's actors and placement groups (Ray itself keeps running)."""
        for group in self.groups.values():
            group.shutdown()
        self.learners.shutdown()
        control.release_control(self.config, self.control)
