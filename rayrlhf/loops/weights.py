"""The learners' policy reaching the rollout workers: after each update, into a new worker
(added by a resize or replacing a dead one), and after the learner group restarts.

Two transports (``weight_sync.method``): the object store (rank 0's state dict by reference,
loaded by every worker) or a broadcast group of learner rank 0 and the rollout workers. Every
worker reports the version it then holds, which must be the learners'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray

from rayrlhf.cluster import LearnerGroup, RoleGroup
from rayrlhf.config import Config
from rayrlhf.faults import is_lost

# Replaces a lost worker of a role (and brings the new one up to date): ChunkRunner.replace.
Replace = Callable[[str, Any, BaseException], Any]


class RolloutWeights:
    """Keeps the rollout workers on the learners' policy version."""

    def __init__(self, config: Config, rollout: RoleGroup) -> None:
        self.config, self.rollout = config, rollout
        self.broadcast = config.weight_sync.method == "broadcast"
        self.ref: ray.ObjectRef | None = None  # the newest weights in the object store
        self.bytes = 0  # the size of the last sync
        self.timeout = config.timeouts.weight_sync_s

    def sync(self, learners: LearnerGroup, version: int, replace: Replace) -> None:
        """Every rollout worker loads the learners' current weights (version ``version``)."""
        if self.broadcast:
            self._broadcast(learners, version)
            return
        self.ref = learners.policy_weights()
        self.load(list(self.rollout.actors), version, replace)
        # The size is object-store metadata: the driver never fetches the weights.
        info = ray.experimental.get_object_locations([self.ref])[self.ref]
        self.bytes = info.get("object_size") or 0

    def load(self, workers: list[Any], version: int, replace: Replace) -> None:
        """The newest object-store weights into ``workers``; a worker lost meanwhile is replaced
        (and its replacement loads them in turn)."""
        if self.ref is None or not workers:  # at version 0 workers hold the initial policy
            return
        refs = [w.load_weights.remote(self.ref, version) for w in workers]
        for worker, ref in zip(workers, refs, strict=True):
            try:
                loaded = ray.get(ref, timeout=self.timeout)
            except Exception as err:
                if not (is_lost(err) or isinstance(err, ray.exceptions.GetTimeoutError)):
                    raise
                replace("rollout", worker, err)
                continue
            check_versions([loaded], version)

    def joined(
        self, learners: LearnerGroup, added: list[Any], version: int, replace: Replace
    ) -> None:
        """Workers were added or replaced: bring them (or, broadcasting, the group) up to date."""
        if self.broadcast:
            self.form_group(learners)
            if added and version > 0:
                self._broadcast(learners, version)  # the current version, to the new workers
        else:
            self.load(added, version, replace)

    def form_group(self, learners: LearnerGroup) -> None:
        """(Re)build the broadcast group: learner rank 0 plus the rollout workers alive now."""
        rank0, workers = learners.actors[0], self.rollout.actors
        host, port = ray.get(rank0.rendezvous_address.remote(0), timeout=self.timeout)
        world = len(workers) + 1
        joins = [
            rank0.join_sync_group.remote(host, port, world),
            *(w.join_sync_group.remote(host, port, i + 1, world) for i, w in enumerate(workers)),
        ]
        ray.get(joins, timeout=self.timeout)

    def _broadcast(self, learners: LearnerGroup, version: int) -> None:
        sends = [a.broadcast_policy.remote() for a in learners.actors]
        receives = [w.receive_weights.remote(version) for w in self.rollout.actors]
        check_versions(ray.get(receives, timeout=self.timeout), version)
        self.bytes = ray.get(sends, timeout=self.timeout)[0]


def check_versions(versions: list[int], expected: int) -> None:
    """Every worker must report the version it was sent: a silent load failure is an error."""
    if set(versions) != {expected}:
        raise RuntimeError(f"rollout workers report versions {versions}, expected {expected}")
