"""The policy versions chunks are generated with, under asynchronous training.

With ``rollout.max_staleness`` k > 0, step t is dispatched while step t - k trains and is
generated with policy version max(0, t - k): the version the learners hold when it is
dispatched. Each chunk names its version and carries a ref to that version's weights; a worker
holding another version loads it before the chunk (so a weight load always falls between
chunks). The version is fixed by the order of dispatch, not by timing, so a run is as
deterministic as the synchronous loop, and a chunk redone on a replacement worker, or after a
resume, is generated with the same weights.

The weights stay in the object store; a checkpoint copies the versions its in-flight steps use
into ``rollout_weights/`` (a zero-CPU task writes them, never the driver).
"""

from __future__ import annotations

from pathlib import Path

import ray

from rayrlhf import cluster
from rayrlhf.cluster import LearnerGroup
from rayrlhf.weight_sync import load_flat, save_flat

FOLDER = "rollout_weights"


class PolicyVersions:
    """Object refs of the policy weights by version, for the versions still needed."""

    def __init__(self, timeout_s: float) -> None:
        self.refs: dict[int, ray.ObjectRef] = {}
        self.timeout = timeout_s

    def publish(self, learners: LearnerGroup, version: int) -> ray.ObjectRef:
        """The learners' current weights, as version ``version``."""
        if version not in self.refs:
            self.refs[version] = learners.policy_weights()
        return self.refs[version]

    def __getitem__(self, version: int) -> ray.ObjectRef:
        """The weights of ``version`` (published or loaded from a checkpoint)."""
        return self.refs[version]

    def keep_from(self, oldest: int) -> None:
        """Drop versions older than ``oldest`` (no chunk in flight uses them any more)."""
        self.refs = {v: r for v, r in self.refs.items() if v >= oldest}

    def save(self, folder: Path, versions: set[int]) -> None:
        """Write ``versions`` under ``folder``/rollout_weights (for the in-flight steps)."""
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

    def clear(self) -> None:
        """Forget every version (a learner restart reloads them from a checkpoint)."""
        self.refs = {}
