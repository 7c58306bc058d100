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

A chunk whose worker died is dispatched again on a replacement (:mod:`rayrlhf.loops.rollouts`);
a dead learner rank restarts the learner group from the last checkpoint; SIGINT/SIGTERM stop
the run at a step boundary with a checkpoint; a rerun resumes from it (:mod:`rayrlhf.resume`).
Between steps the trainer applies resize requests (`set_rollout_workers`, or `rayrlhf scale`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from rayrlhf import cluster, resume
from rayrlhf.buffer import ExperienceBuffer
from rayrlhf.checkpoint import inject_fault
from rayrlhf.config import Config, ConfigError, to_dict
from rayrlhf.data.prompts import PromptSource, load_prompts
from rayrlhf.faults import (
    FaultCounts,
    LearnerLost,
    RunFailed,
    RunStopped,
    StopRequest,
    one_line,
    write_error_log,
)
from rayrlhf.ilql_model import is_ilql_folder
from rayrlhf.loops.heldout import evaluate_chunks
from rayrlhf.loops.rollouts import ChunkRunner
from rayrlhf.loops.run_state import RunState, load_run_state, save_run_state
from rayrlhf.loops.sampling import StepSampler
from rayrlhf.loops.versions import PolicyVersions
from rayrlhf.loops.weights import RolloutWeights
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
    """Builds the actor groups for a config, resumes from its newest checkpoint, runs steps."""

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
        prompts, self.data_report = load_prompts(
            config.data.prompts, config.data.prompt_key, config.data.max_bad_fraction
        )
        self.prompts = PromptSource(prompts, config.run.seed)
        # Hashed once: every checkpoint of the run records what the run read.
        self.data_digests = resume.data_digests(to_dict(config))
        # Refused before any actor starts: a damaged checkpoint or a changed config costs seconds.
        found = resume.find(self.checkpoints, config.run.resume)
        if found is not None:
            shape = (config.learner.num_ranks, config.learner.zero_stage)
            resume.check_compatible(
                found, to_dict(config), shape, "learner", data=self.data_digests
            )
        cluster.ensure_ray(config)
        self.control = cluster.control_actor(config)
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
        self.groups = {"rollout": self.rollout, "reward": self.reward}
        if config.uses_reference:  # with a KL coefficient of 0 nothing reads reference log-probs
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
        self.weights = RolloutWeights(config, self.rollout)
        if self.weights.broadcast:
            self.weights.form_group(self.learners)
        self.buffer = ExperienceBuffer()
        self.sampler = StepSampler(config, self.prompts, self.runner, self.buffer)
        self.ahead = config.rollout.max_staleness  # steps generation runs ahead (0: in step)
        self.versions = PolicyVersions(config.timeouts.weight_sync_s)
        self.state = RunState()
        self.logger: RunLogger | None = None
        self._at_boundary = True  # learners hold the state after self.step (checkpointable)
        self.resumed_from = found
        if found is not None:
            self._restore(found)
            vars(self.faults).update(self.state.faults)  # what the run survived so far
            self.sync_weights()
            print(f"[rayrlhf] resumed from {found.path} (step {self.step})", flush=True)

    @property
    def step(self) -> int:
        """Steps completed."""
        return self.state.step

    @property
    def policy_version(self) -> int:
        """The version of the policy the learners hold (and the rollout workers, once synced)."""
        return self.state.policy_version

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, num_steps: int | None = None) -> list[dict[str, Any]]:
        """Run ``num_steps`` more steps (default: until ``run.num_steps``); returns their metrics.

        Raises :class:`RunStopped` after a SIGINT/SIGTERM (with a checkpoint written) and
        :class:`RunFailed` on an error it cannot get past (with a checkpoint where possible).
        """
        target = self.step + num_steps if num_steps else self.config.run.num_steps
        self.logger = RunLogger(
            self.run_dir,
            to_dict(self.config),
            self.config.run.num_steps,
            self.config.run.progress_bar,
            desc=self.config.algorithm.name,
            position=self.state.logs,
        )
        history: list[dict[str, Any]] = []
        every = self.config.run.checkpoint_every
        try:
            with StopRequest() as stop:
                while self.step < target:
                    self._apply_resize_request()
                    try:
                        metrics = self.train_step()
                    except LearnerLost as err:
                        self._restart_learners(err)
                        history = [m for m in history if m["policy_version"] <= self.step]
                        continue
                    self.logger.log(self.step, metrics, metrics.pop("samples_text", []))
                    inject_fault(f"after_step:{self.step}")
                    history.append(metrics)
                    self._report()
                    due = every and (self.step % every == 0 or self.step == target)
                    if due or stop.requested:
                        self.save_checkpoint()
                    if stop.requested:
                        raise RunStopped(self._stop_message(stop.signal_name), stop.signal_name)
        except (RunStopped, KeyboardInterrupt):
            raise
        except Exception as err:
            raise self._failure(err) from err
        finally:
            self.state.logs = self.logger.position()  # a later run() call continues from here
            self.logger.close()
        return history

    def train_step(self) -> dict[str, Any]:
        """Generate → score and reference → train → weight sync; returns the step's metrics.

        With ``rollout.max_staleness`` k > 0 the steps up to k ahead are dispatched first (with
        the current policy version), so they generate while this one trains.
        """
        t0 = time.perf_counter()
        # Chunks are dealt over the workers alive now: a resize rebalances the next step.
        workers = len(self.rollout.actors)
        version, weights = self._dispatch_ahead()
        cursor, sampling = self.sampler.collect(
            self.step, self.state.prompt_cursor, version, weights
        )
        if self.config.rollout.vllm.sleep_between_steps and not self.ahead:
            for worker in self.rollout.actors:  # the learners get the memory while they train
                worker.sleep.remote()
        t_collect = time.perf_counter()
        self._at_boundary = False
        metrics = self.learners.train(self.buffer.shards(self.config.learner.num_ranks))
        trained = self.buffer.mark_trained()
        self.state.step += 1
        self.state.prompt_cursor = cursor
        self.state.policy_version = int(metrics["policy_version"])
        self._at_boundary = True
        t_train = time.perf_counter()
        self.sync_weights()
        t_end = time.perf_counter()
        if self.ahead:
            metrics["async/steps_ahead"] = len(self.sampler.ahead)
            metrics["time/wait_rollouts"] = t_collect - t0  # generation not hidden by training
        metrics.update(
            {
                "time/weight_sync": t_end - t_train,
                "time/step": t_end - t0,
                "throughput/samples_per_s": trained / (t_end - t0),
                "throughput/tokens_per_s": metrics["tokens/response"] / (t_end - t0),
                "buffer/trained_total": self.buffer.trained_total,
                "data/prompts_skipped": self.data_report.skipped,
                "rollout/workers": workers,
                "sync/bytes": self.sync_bytes,
                **sampling,
                **self.faults.metrics(),
            }
        )
        return metrics

    # ---- weights ----------------------------------------------------------------------------

    def sync_weights(self) -> None:
        """Every rollout worker loads the learner's current weights before generating again.

        Asynchronous: the current version is published to the object store instead; each chunk
        names its version and its worker loads it first (:mod:`rayrlhf.loops.versions`).
        """
        if self.ahead:
            self.versions.publish(self.learners, self.policy_version)
            self.versions.keep_from(self.step - self.ahead)
            return
        self.weights.sync(self.learners, self.policy_version, self.runner.replace)

    def _dispatch_ahead(self) -> tuple[int | None, Any]:
        """Asynchronous: dispatch steps up to ``max_staleness`` ahead (not past
        ``run.num_steps``) with the current version; returns that version and its weights
        (None, None when synchronous)."""
        if not self.ahead:
            return None, None
        version = self.policy_version
        weights = self.versions.publish(self.learners, version)
        last = min(self.step + self.ahead, self.config.run.num_steps - 1)
        for t in range(self.step, last + 1):
            if t not in self.sampler.ahead:
                self.state.prompt_cursor = self.sampler.start(
                    t, self.state.prompt_cursor, version, weights
                )
        return version, weights

    @property
    def sync_bytes(self) -> int:
        """Bytes of the last weight sync."""
        return self.weights.bytes

    def _bring_up_to_date(self, role: str, actor: Any) -> None:
        """A new actor of ``role`` gets the current policy version before it works."""
        if role == "rollout":  # reward and reference workers hold nothing that changes
            self.weights.joined(self.learners, [actor], self.policy_version, self.runner.replace)

    # ---- resizing -------------------------------------------------------------------------------

    def _apply_resize_request(self) -> None:
        requested = ray.get(self.control.take_request.remote(), timeout=60)
        if requested is not None:
            self.set_rollout_workers(requested)

    def _report(self) -> None:
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
        self.weights.joined(self.learners, added, self.policy_version, self.runner.replace)

    # ---- checkpoints, restarts, failures ------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Commit a checkpoint of the state after the current step; returns its folder."""
        if self.logger is not None:
            self.state.logs = self.logger.position()
        self.state.faults = vars(self.faults).copy()
        self.state.in_flight = self.sampler.in_flight() if self.ahead else []
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
            lambda folder: self.versions.save(folder, used),
        )

    def _restore(self, found: resume.Checkpoint | None) -> None:
        """Learners, ledger, step, version and log position back to ``found`` (None: start).

        The rollout workers still hold other weights: the caller syncs them.
        """
        self.buffer = ExperienceBuffer()
        self.sampler.buffer = self.buffer
        self.sampler.ahead = {}
        self.versions.clear()
        if found is None:
            self.state = RunState()
            return
        self.learners.load_checkpoint(str(found.path / "learner"))
        self.state = load_run_state(found.path, self.buffer)
        # Steps that were generating ahead: dispatched again under the same ids, with the same
        # policy versions (their weights are in the checkpoint).
        self.versions.load(found.path, {int(f["version"]) for f in self.state.in_flight})
        for f in self.state.in_flight:
            v = int(f["version"])
            self.sampler.start(int(f["step"]), int(f["cursor"]), v, self.versions[v])

    def _restart_learners(self, err: LearnerLost) -> None:
        """Stop the whole learner group, start it again and roll back to the last checkpoint."""
        self.faults.learner_restarts += 1
        self.faults.last_cause = f"learner: {one_line(err)}"
        if self.faults.learner_restarts > self.config.run.max_learner_restarts:
            raise RunFailed(
                f"learner group lost {self.faults.learner_restarts} times, more than "
                f"run.max_learner_restarts={self.config.run.max_learner_restarts}; last: "
                f"{self.faults.last_cause}"
            ) from err
        found = resume.find(self.checkpoints, "auto")
        where = f"checkpoint {found.path.name}" if found else "the start (no checkpoint yet)"
        print(f"[rayrlhf] {self.faults.last_cause}; restarting the learners from {where}")
        self.learners.shutdown()
        self.learners = cluster.LearnerGroup(
            self.config, self.roles.learner, generation=self.faults.learner_restarts
        )
        self.learners.wait_ready()
        if self.weights.broadcast:
            self.weights.form_group(self.learners)
        self._restore(found)
        self.sync_weights()  # the restored (or initial) policy, everywhere
        assert self.logger is not None
        self.logger.rewind(self.state.logs)
        self._at_boundary = True

    def _stop_message(self, signal_name: str | None) -> str:
        return (
            f"stopped by {signal_name} after step {self.step}; checkpoint in {self.checkpoints}. "
            "Run the same command again to resume"
        )

    def _failure(self, err: BaseException) -> RunFailed:
        """Checkpoint if the learners are between steps, log the traceback, name the cause."""
        where = "the last checkpoint stands (the learners stopped mid-step)"
        if self._at_boundary:
            try:
                self.buffer.abandon(self.sampler.in_flight_ids() if self.ahead else frozenset())
                where = f"checkpoint written after step {self.step}"
                self.save_checkpoint()
            except Exception as ckpt_err:  # the cause may have taken the learners with it
                where = f"no checkpoint written ({one_line(ckpt_err)})"
        log = write_error_log(self.run_dir, err)
        cause = str(err) if isinstance(err, RunFailed) else one_line(err)
        return RunFailed(
            f"{cause} — stopped in step {self.step + 1}; {where}; traceback in {log}. Fix the "
            "cause and run the same command again to resume"
        )

    # ---- evaluation and saving ------------------------------------------------------------

    def evaluate(self, prompts: list[str]) -> dict[str, Any]:
        """Held-out metrics of the current policy: reward, KL to the reference, samples.

        Uses the rollout, reward and reference workers; the same ``eval-i`` sample ids (hence
        the same sampling seeds) every call, so before/after numbers are a paired comparison.
        """
        version = weights = None
        if self.ahead:  # workers hold older versions: name the current one
            version = self.policy_version
            weights = self.versions.publish(self.learners, version)
        c = self.config
        metrics = evaluate_chunks(
            self.runner, prompts, c.rollout.chunk_size, c.timeouts.rollout_s, version, weights
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
        cluster.release_control(self.config, self.control)
