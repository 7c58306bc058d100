"""The only module that applies ``ray.remote``: role groups, placement groups, control actor.

The role classes stay plain Python; here they become actors with the CPUs and GPUs the config asks
for, each role in a placement group of its own (packed onto few nodes or spread across them).
The learner group forms one torch.distributed group across its ranks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    PlacementGroupSchedulingStrategy,
)

from rayrlhf.actor_env import ACTOR_ENV
from rayrlhf.buffer import Shard
from rayrlhf.config import Config, EngineConfig
from rayrlhf.control import NAMESPACE
from rayrlhf.faults import LearnerLost, is_lost, one_line, wait_all
from rayrlhf.local_ray import start_local
from rayrlhf.metrics import RUN_DEPENDENT
from rayrlhf.roles.environment import EnvironmentWorker
from rayrlhf.roles.learner import Learner

STRATEGIES = {"pack": "PACK", "spread": "SPREAD"}
PLACEMENT_TIMEOUT_S = 600


def zero_cpu_task(fn: Callable) -> Any:
    """``fn`` as a Ray task that reserves no CPU (small reductions next to the data)."""
    return ray.remote(num_cpus=0)(fn)


def ensure_ray(config: Config) -> None:
    """Connect to ``RAY_ADDRESS`` when set; otherwise start a local Ray sized for this config.

    Locally the logical CPU count is raised well above what the actors ask for: on a laptop the
    roles share the cores (and rollout workers may be added mid-run) rather than waiting for cores
    that do not exist.
    """
    # The driver learns of failed calls through their receipts and never reads the results of
    # failed calls; Ray would print each of those at garbage collection as "unhandled".
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], namespace=NAMESPACE)
        return
    needed = (
        config.rollout.num_workers * config.rollout.num_cpus
        + config.reward.num_workers * config.reward.num_cpus
        + config.reference.num_workers * config.reference.num_cpus
        + config.learner.num_ranks * config.learner.num_cpus
        + config.env_workers.num_workers * config.env_workers.num_cpus
    )
    # The dashboard stays on (on loopback, as every listener) so `ray list actors` can inspect.
    start_local(max(os.cpu_count() or 1, 2 * int(needed) + 1, 16), NAMESPACE)


def _with_receipts(cls: type, method: str) -> type:
    """``cls`` plus ``work``: its ``method``, returning the result *and* a receipt, two objects.

    The driver waits on and reads the receipt (a few bytes it holds itself) and passes the
    result on by reference: it learns that a result exists, or why not (the actor died, the
    call raised), without ever fetching the result.
    """
    run = getattr(cls, method)

    def work(self: Any, *args: Any) -> tuple[Any, bool]:
        return run(self, *args), True

    return type(cls.__name__, (cls,), {"work": ray.method(num_returns=2)(work)})


@dataclass(frozen=True)
class _Slot:
    """Where an actor lives: its placement group (None without resources) and bundle."""

    pg: PlacementGroup | None
    bundle: int


class RoleGroup:
    """The actors of one role. Each ``add`` places its actors in one placement group.

    ``make_args(index)`` gives the constructor arguments of the actor with that index; indices
    grow monotonically, so a removed or replaced worker's name is never reused within a run.
    ``work`` names the role's unit of work (``generate``, ``score``, ``logprobs``) for
    :meth:`submit`.
    """

    def __init__(
        self,
        cls: type,
        role: str,
        run_tag: str,
        resources: tuple[float, float, str, dict[str, float]],
        make_args: Callable[[int], tuple],
        work: str | None = None,
        concurrency: int = 1,
    ) -> None:
        self.remote_cls = ray.remote(_with_receipts(cls, work) if work else cls)
        self.role, self.run_tag = role, run_tag
        self.num_cpus, self.num_gpus, self.placement, self.custom = resources
        self.make_args, self.concurrency = make_args, concurrency
        self.actors: list[Any] = []
        self.names: list[str] = []
        self._slots: list[_Slot] = []
        self._pgs: list[PlacementGroup] = []
        self._next_index = 0

    def _start(self, slot: _Slot) -> tuple[Any, str]:
        index = self._next_index
        self._next_index += 1
        name = f"{self.role}-{index}"
        options: dict[str, Any] = {
            "name": f"{self.run_tag}/{name}",
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "resources": dict(self.custom),
            # A role's calls run one at a time, in submission order (environment workers: the
            # calls of several rollout workers at once, each on its own chunk's episodes).
            "max_concurrency": self.concurrency,
            # Merged with the job's environment: malloc keeps freed memory (rayrlhf.actor_env).
            "runtime_env": {"env_vars": dict(ACTOR_ENV)},
        }
        if slot.pg is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=slot.pg, placement_group_bundle_index=slot.bundle
            )
        return self.remote_cls.options(**options).remote(*self.make_args(index)), name

    def add(self, count: int) -> list[Any]:
        """Start ``count`` more actors in a new placement group; returns them."""
        pg = None
        if self.num_cpus > 0 or self.num_gpus > 0 or self.custom:  # Ray refuses empty bundles
            bundle = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.custom}
            bundle = {k: v for k, v in bundle.items() if v > 0}
            pg = placement_group([bundle] * count, strategy=STRATEGIES[self.placement])
            ready, _ = ray.wait([pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
            if not ready:
                remove_placement_group(pg)
                raise TimeoutError(
                    f"{self.role}: {count} bundles of {bundle} ({self.placement}) not placed after "
                    f"{PLACEMENT_TIMEOUT_S}s; the cluster lacks these resources"
                )
            self._pgs.append(pg)
        new = []
        for i in range(count):
            slot = _Slot(pg, i)
            actor, name = self._start(slot)
            self.actors.append(actor)
            self.names.append(name)
            self._slots.append(slot)
            new.append(actor)
        return new

    def replace(self, actor: Any) -> Any:
        """Kill ``actor`` (if it still lives) and start a new one in its bundle; returns it."""
        i = self.actors.index(actor)
        ray.kill(actor, no_restart=True)
        self.actors[i], self.names[i] = self._start(self._slots[i])
        return self.actors[i]

    def name_of(self, actor: Any) -> str:
        """The actor's name within the run (``rollout-3``)."""
        return self.names[self.actors.index(actor)]

    def submit(self, actor: Any, *args: Any) -> tuple[ray.ObjectRef, ray.ObjectRef]:
        """Run the role's unit of work on ``actor``: refs to the result and to its receipt."""
        return actor.work.remote(*args)

    def remove(self, count: int) -> list[Any]:
        """Stop the ``count`` most recently added actors; free placement groups left empty."""
        if count >= len(self.actors):
            raise ValueError(f"{self.role}: cannot remove {count} of {len(self.actors)} actors")
        gone = self.actors[-count:]
        for attr in ("actors", "names", "_slots"):
            setattr(self, attr, getattr(self, attr)[:-count])
        for actor in gone:
            ray.kill(actor)
        used = {id(s.pg) for s in self._slots}
        for pg in [p for p in self._pgs if id(p) not in used]:
            remove_placement_group(pg)
            self._pgs.remove(pg)
        return gone

    def shutdown(self) -> None:
        """Stop every actor and free every placement group."""
        for actor in self.actors:
            ray.kill(actor)
        for pg in self._pgs:
            remove_placement_group(pg)
        self.actors, self.names, self._slots, self._pgs = [], [], [], []


def run_tag(config: Config) -> str:
    """Prefix of this run's actor names: the run name and the driver's pid (unique per run)."""
    return f"{config.run.name}-{os.getpid()}"


# Each role's unit of work, as RoleGroup.submit runs it.
WORK = {"rollout": "generate", "reward": "score", "reference": "logprobs"}


def role_group(
    config: Config, cls: type, role: str, make_args: Callable[[int], tuple]
) -> RoleGroup:
    """A started group for ``role`` ('rollout', 'reward' or 'reference') of role class ``cls``."""
    section = getattr(config, role)
    group = RoleGroup(
        cls,
        role,
        run_tag(config),
        (section.num_cpus, section.num_gpus, section.placement, section.resources),
        make_args,
        work=WORK[role],
    )
    group.add(section.num_workers)
    return group


# Calls an environment worker serves at once: one per rollout worker sending it a chunk, so that
# a call's deadline never counts time queued behind another rollout worker's chunk.
ENV_CONCURRENCY = 64


def env_groups(config: Config) -> dict[str, RoleGroup]:
    """``{"environment": the environment workers}``, started, to join a ChunkRunner's groups;
    empty when the rollout workers run the environments themselves (``env_workers``)."""
    e = config.env_workers
    if not e.num_workers:
        return {}
    spec, threads = config.rollout.environment, e.threads
    group = RoleGroup(
        EnvironmentWorker,
        "environment",
        run_tag(config),
        (e.num_cpus, e.num_gpus, e.placement, e.resources),
        lambda i: (spec, threads),
        concurrency=ENV_CONCURRENCY,
    )
    group.add(e.num_workers)
    return {"environment": group}


def agreed(results: list[dict], keys: tuple[str, ...] | None = None) -> dict:
    """Rank 0's metrics, after checking every rank reported the same ``keys`` (default: all but
    the run-dependent ones, times and throughput, which each rank measures for itself).

    Metrics are all-reduced, so every rank must report the same numbers: a rank that diverged
    (another version, other data) is caught here, at the step it happens.
    """
    first = results[0]
    names = keys or tuple(k for k in first if not k.startswith(RUN_DEPENDENT))
    for rank, other in enumerate(results[1:], start=1):
        if other.keys() != first.keys() or any(
            abs(other[k] - first[k]) > 1e-6 * (1 + abs(first[k])) for k in names
        ):
            raise RuntimeError(f"learner rank {rank} disagrees with rank 0 on {names}")
    return first


class LearnerGroup:
    """``num_ranks`` learner actors forming one torch.distributed group.

    PPO's :class:`Learner` by default (section ``learner``); the SFT and reward-model stages pass
    their own rank class, learner section and constructor arguments. ``generation`` numbers the
    groups of a run that restarted its learners (their actor names stay unique).
    """

    def __init__(
        self,
        config: Config,
        cls: type = Learner,
        engine: EngineConfig | None = None,
        make_args: Callable[[int], tuple] | None = None,
        role: str = "learner",
        generation: int = 0,
    ) -> None:
        lc = engine or config.learner
        self.timeouts = config.timeouts
        self.group = RoleGroup(
            cls,
            role if generation == 0 else f"{role}-g{generation}",
            run_tag(config),
            (lc.num_cpus, lc.num_gpus, lc.placement, lc.resources),
            make_args or (lambda rank: (config, rank)),
            # The policy's weights travel by reference, with a receipt that shows a dead rank.
            work="policy_state_dict" if hasattr(cls, "policy_state_dict") else None,
        )
        self.actors = self.group.add(lc.num_ranks)
        rendezvous = self.actors[0].rendezvous_address.remote(lc.master_port)
        addr, port = self._wait([rendezvous], "start", self.timeouts.setup_s)[0]
        # Setup (process group, model loading, engines) runs while the caller starts other roles.
        self._setup = [a.setup.remote(addr, port) for a in self.actors]

    def _wait(self, refs: list[Any], phase: str, timeout_s: float) -> list[Any]:
        """Every rank's result; a dead or hung rank is :class:`LearnerLost` (the gang restarts)."""
        what = [f"{name} ({phase})" for name in self.group.names]
        try:
            return wait_all(refs, timeout_s, what)
        except Exception as err:
            if is_lost(err):
                raise LearnerLost(f"learner {phase}: {one_line(err)}") from err
            raise

    def wait_ready(self) -> list[Any]:
        """Block until every rank has joined the group and built its engines; their results."""
        return self._wait(self._setup, "setup", self.timeouts.setup_s)

    def call(self, method: str, *args: Any, timeout_s: float | None = None) -> list[Any]:
        """Call ``method`` on every rank (a collective) and return each rank's result."""
        refs = [getattr(a, method).remote(*args) for a in self.actors]
        return self._wait(refs, method, timeout_s or self.timeouts.train_s)

    def call_agreed(self, method: str, *args: Any) -> dict:
        """Call ``method`` on every rank; rank 0's metrics, once all ranks are seen to agree."""
        return agreed(self.call(method, *args))

    def train(self, shards: list[Shard]) -> dict:
        """One PPO step, each rank on its shard (refs travel; the ranks fetch the data)."""
        refs = [
            a.train_step.remote(s.rollouts, s.scores, s.references, s.rows)
            for a, s in zip(self.actors, shards, strict=True)
        ]
        results = self._wait(refs, "train_step", self.timeouts.train_s)
        keys = ("policy_version", "samples", "reward/mean", "kl/mean", "loss/policy")
        return agreed(results, tuple(k for k in keys if k in results[0]))

    def policy_weights(self) -> ray.ObjectRef:
        """Ref to the full policy state dict (rank 0's result; other ranks take part in gathers).

        The weights stay in the object store: the driver reads only the ranks' receipts.
        """
        weights, receipts = zip(*(self.group.submit(a) for a in self.actors), strict=True)
        self._wait(list(receipts), "policy_state_dict", self.timeouts.weight_sync_s)
        return weights[0]

    def save_checkpoint(self, path: str) -> dict[str, dict[str, Any]]:
        """Every rank writes its part of a checkpoint under ``path`` and hashes it; the
        manifest entries of all their files (paths relative to ``path``)."""
        parts = self.call("save_checkpoint", path, timeout_s=self.timeouts.checkpoint_s)
        return {name: entry for part in parts for name, entry in part.items()}

    def load_checkpoint(self, path: str, entries: dict[str, Any] | None = None) -> list[Any]:
        """Every rank checks (against their manifest ``entries``, relative to ``path``) and
        loads its part of the checkpoint at ``path``; their results."""
        return self.call("load_checkpoint", path, entries, timeout_s=self.timeouts.checkpoint_s)

    def save_policy(self, path: str) -> None:
        """Write the trained policy as an HF folder (rank 0 writes; every rank gathers)."""
        self.call("save_policy", path, timeout_s=self.timeouts.checkpoint_s)

    def policy_checksums(self) -> list[float]:
        """Each rank's sum of the full policy parameters: equal when the ranks agree."""
        return ray.get([a.policy_checksum.remote() for a in self.actors])

    def state_digests(self) -> list[dict[str, str]]:
        """Each rank's sha256 of its parameters and optimizer state (equal ⇔ torch.equal)."""
        return ray.get([a.state_digest.remote() for a in self.actors])

    def shutdown(self) -> None:
        """Stop the ranks and free their placement group."""
        self.group.shutdown()
