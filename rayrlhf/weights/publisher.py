"""The learners' policy reaching the rollout workers: one publisher for both schedules.

- **Synchronous** (``rollout.max_staleness`` 0): after each update every rollout worker loads
  the new weights before it generates again, through one of two transports
  (``weight_sync.method``): the object store (rank 0's state dict by reference, loaded by every
  worker) or a broadcast group of learner rank 0 and the rollout workers. Every worker reports
  the version it then holds, which must be the learners'.
- **Asynchronous** (k > 0): step t is dispatched while step t - k trains and is generated with
  policy version max(0, t - k), the version the learners hold when it is dispatched. Each chunk
  names its version and carries a ref to that version's weights; a worker holding another
  version loads it before the chunk, so a load always falls between chunks. The version is
  fixed by the order of dispatch, not by timing: a run is as deterministic as the synchronous
  loop, and a chunk redone on a replacement worker, or after a resume, gets the same weights.
  A checkpoint copies the versions its in-flight steps use into ``rollout_weights/`` (a
  zero-CPU task writes them, never the driver).

New workers (added by a resize, or replacing dead ones) and a restarted learner group are
brought up to date by the same object.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from rayrlhf import cluster
from rayrlhf.cluster import LearnerGroup, RoleGroup
from rayrlhf.config import Config
from rayrlhf.faults import is_lost
from rayrlhf.weights.transport import load_flat, save_flat

FOLDER = "rollout_weights"

# Replaces a lost worker of a role (and brings the new one up to date): ChunkRunner.replace.
Replace = Callable[[str, Any, BaseException], Any]


class WeightPublisher:
    """Keeps the rollout workers on the learners' policy, synchronously or a bounded number of
    versions behind; ``replace`` replaces a worker lost during a load."""

    def __init__(self, config: Config, rollout: RoleGroup, replace: Replace) -> None:
        self.rollout, self.replace = rollout, replace
        self.ahead = config.rollout.max_staleness  # versions generation may run behind
        self.broadcast = config.weight_sync.method == "broadcast"
        self.timeout = config.timeouts.weight_sync_s
        self.learners: LearnerGroup | None = None
        self.ref: ray.ObjectRef | None = None  # the newest synchronously loaded weights
        self.refs: dict[int, ray.ObjectRef] = {}  # asynchronous: weights by version
        self.bytes = 0  # the size of the last synchronous load

    def attach(self, learners: LearnerGroup) -> None:
        """Publish from ``learners`` (a new group after a restart forms the broadcast anew)."""
        self.learners = learners
        self.refs = {}
        if self.broadcast:
            self._form_group()

    # ---- after an update -----------------------------------------------------------------------

    def publish(self, version: int, step: int) -> None:
        """The learners now hold ``version`` after ``step`` steps: the workers load it before
        generating again, or (asynchronous) it is published for the steps dispatched next."""
        if self.ahead:
            self.version_ref(version)
            self.refs = {v: r for v, r in self.refs.items() if v >= step - self.ahead}
            return
        if self.broadcast:
            self._broadcast(version)
            return
        assert self.learners is not None
        self.ref = self.learners.policy_weights()
        self._load(list(self.rollout.actors), version)
        # The size is object-store metadata: the driver never fetches the weights.
        info = ray.experimental.get_object_locations([self.ref])[self.ref]
        self.bytes = info.get("object_size") or 0

    def for_dispatch(self, version: int) -> tuple[int | None, Any]:
        """What chunks dispatched now name: (None, None) when synchronous (the workers hold the
        learners' version already), else the current version and a ref to its weights."""
        return (version, self.version_ref(version)) if self.ahead else (None, None)

    def version_ref(self, version: int) -> ray.ObjectRef:
        """The learners' current weights as version ``version`` (published once)."""
        if version not in self.refs:
            assert self.learners is not None
            self.refs[version] = self.learners.policy_weights()
        return self.refs[version]

    def joined(self, added: list[Any], version: int) -> None:
        """Workers were added or replaced: bring them (or, broadcasting, the group) up to date.

        Asynchronous chunks name their version, so a new worker loads it with its first chunk.
        """
        if self.ahead:
            return
        if self.broadcast:
            self._form_group()
            if added and version > 0:
                self._broadcast(version)  # the current version, to the new workers
        else:
            self._load(added, version)

    # ---- checkpoints (asynchronous: the versions the in-flight steps use) ----------------------

    def save(self, folder: Path, versions: set[int]) -> None:
        """Write ``versions`` under ``folder``/rollout_weights."""
        if not versions:
            return
        (folder / FOLDER).mkdir()
        write = cluster.zero_cpu_task(save_flat)
        done = [write.remote(self.refs[v], str(folder / FOLDER / f"v{v}.pt")) for v in versions]
        ray.get(done, timeout=self.timeout)

    def load(self, folder: Path, versions: set[int]) -> None:
        """Put the saved ``versions`` back in the object store (replacing what is held)."""
        read = cluster.zero_cpu_task(load_flat)
        self.refs = {v: read.remote(str(folder / FOLDER / f"v{v}.pt")) for v in versions}

    # ---- transports --------------------------------------------------------------------------

    def _load(self, workers: list[Any], version: int) -> None:
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
                self.replace("rollout", worker, err)
                continue
            check_versions([loaded], version)

    def _form_group(self) -> None:
        """(Re)build the broadcast group: learner rank 0 plus the rollout workers alive now."""
        assert self.learners is not None
        rank0, workers = self.learners.actors[0], self.rollout.actors
        host, port = ray.get(rank0.rendezvous_address.remote(0), timeout=self.timeout)
        world = len(workers) + 1
        joins = [
            rank0.join_sync_group.remote(host, port, world),
            *(w.join_sync_group.remote(host, port, i + 1, world) for i, w in enumerate(workers)),
        ]
        ray.get(joins, timeout=self.timeout)

    def _broadcast(self, version: int) -> None:
        assert self.learners is not None
        sends = [a.broadcast_policy.remote() for a in self.learners.actors]
        receives = [w.receive_weights.remote(version) for w in self.rollout.actors]
        check_versions(ray.get(receives, timeout=self.timeout), version)
        self.bytes = ray.get(sends, timeout=self.timeout)[0]


def check_versions(versions: list[int], expected: int) -> None:
    """Every worker must report the version it was sent: a silent load failure is an error."""
    if set(versions) != {expected}:
        raise RuntimeError(f"rollout workers report versions {versions}, expected {expected}")
