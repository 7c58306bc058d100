"""The only module that applies ``ray.remote``: actor groups for each role, with their resources.

The role classes stay plain Python; here they become actors with the CPUs and GPUs the config asks
for. The learner group forms one torch.distributed group across its ranks.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from rayrlhf.buffer import Shard
from rayrlhf.config import Config
from rayrlhf.roles.learner import Learner
from rayrlhf.roles.reference import ReferenceWorker
from rayrlhf.roles.reward import RewardWorker
from rayrlhf.roles.rollout import RolloutWorker


def ensure_ray(config: Config) -> None:
    """Connect to ``RAY_ADDRESS`` when set; otherwise start a local Ray sized for this config.

    Locally the logical CPU count is raised to what the actors ask for: on a laptop the roles
    share the cores rather than waiting for cores that do not exist.
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    needed = (
        config.rollout.num_workers * config.rollout.num_cpus
        + config.reward.num_workers * config.reward.num_cpus
        + config.reference.num_workers * config.reference.num_cpus
        + config.learner.num_ranks * config.learner.num_cpus
    )
    # The dashboard stays on (bound to loopback) so `ray list actors` can inspect the run.
    ray.init(num_cpus=max(os.cpu_count() or 1, int(needed) + 1), dashboard_host="127.0.0.1")


def _actor(cls: type, name: str, num_cpus: float, num_gpus: float) -> Any:
    # max_concurrency 1: a role's methods run one at a time, in order of submission.
    return ray.remote(cls).options(
        name=name, num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=1
    )


def _run_name(config: Config) -> str:
    return f"{config.run.name}-{os.getpid()}"


def rollout_actors(config: Config, start: int = 0, count: int | None = None) -> list[Any]:
    """``count`` rollout actors (default ``rollout.num_workers``), indexed from ``start``."""
    rc = config.rollout
    n = rc.num_workers if count is None else count
    return [
        _actor(RolloutWorker, f"{_run_name(config)}/rollout-{i}", rc.num_cpus, rc.num_gpus).remote(
            config, i
        )
        for i in range(start, start + n)
    ]


def reward_actors(config: Config) -> list[Any]:
    """``reward.num_workers`` reward actors."""
    rc = config.reward
    device = "cuda" if rc.num_gpus > 0 else "cpu"
    return [
        _actor(RewardWorker, f"{_run_name(config)}/reward-{i}", rc.num_cpus, rc.num_gpus).remote(
            rc, device
        )
        for i in range(rc.num_workers)
    ]


def reference_actors(config: Config) -> list[Any]:
    """``reference.num_workers`` reference actors."""
    rc = config.reference
    return [
        _actor(
            ReferenceWorker, f"{_run_name(config)}/reference-{i}", rc.num_cpus, rc.num_gpus
        ).remote(config)
        for i in range(rc.num_workers)
    ]


class LearnerGroup:
    """``learner.num_ranks`` Learner actors forming one torch.distributed group."""

    def __init__(self, config: Config) -> None:
        lc = config.learner
        self.actors = [
            _actor(Learner, f"{_run_name(config)}/learner-{r}", lc.num_cpus, lc.num_gpus).remote(
                config, r
            )
            for r in range(lc.num_ranks)
        ]
        addr, port = ray.get(self.actors[0].rendezvous_address.remote(lc.master_port))
        # Setup (process group, model loading, engines) runs while the caller starts other roles.
        self._setup = [a.setup.remote(addr, port) for a in self.actors]

    def wait_ready(self) -> None:
        """Block until every rank has joined the group and built its engines."""
        ray.get(self._setup)

    def train(self, shards: list[Shard]) -> dict:
        """One PPO step, each rank on its shard (refs travel; the ranks fetch the data)."""
        results = ray.get(
            [
                a.train_step.remote(s.rollouts, s.scores, s.references)
                for a, s in zip(self.actors, shards, strict=True)
            ]
        )
        # Metrics are all-reduced, so every rank must report the same numbers: a rank that
        # diverged (another version, other data) is caught here, at the step it happens.
        keys = ("policy_version", "samples", "reward/mean", "kl/mean", "loss/policy")
        first = [results[0][k] for k in keys]
        for rank, res in enumerate(results[1:], start=1):
            if [res[k] for k in keys] != first:
                raise RuntimeError(f"learner rank {rank} disagrees with rank 0 on {keys}")
        return results[0]

    def policy_weights(self) -> ray.ObjectRef:
        """Ref to the full policy state dict (rank 0's result; other ranks take part in gathers)."""
        refs = [a.policy_state_dict.remote() for a in self.actors]
        ray.wait(refs, num_returns=len(refs), fetch_local=False)
        return refs[0]

    def policy_checksums(self) -> list[float]:
        """Each rank's sum of the full policy parameters: equal when the ranks agree."""
        return ray.get([a.policy_checksum.remote() for a in self.actors])
