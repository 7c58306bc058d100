"""A multi-node Ray cluster on one machine: a head and worker nodes, each its own raylet with its
own object store and resources, for the multi-node tests and benchmarks (and for trying a
placement before renting the nodes).

Why it transfers to a real cluster: Ray schedules, places, transfers objects and detects a
dead node per raylet, not per machine. Every node here has its own raylet, object store and
worker processes, talks to the head's GCS over TCP, and is killed the way a machine dies (its
raylet and every worker process SIGKILLed at once, no graceful drain). What one machine cannot
show is the network's bandwidth and latency: objects between nodes travel over loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.cluster_utils import Cluster

OBJECT_STORE_BYTES = 256 * 2**20  # per node: tiny models; Ray's default is 30% of RAM each
# A killed node is declared dead after ~2 missed health checks of 1 s, not Ray's default of
# 5 × 3 s: the tests wait for it.
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 2,
}


@dataclass
class NodeSpec:
    """One worker node: its name (for the caller), CPUs and custom resources."""

    name: str
    num_cpus: float
    resources: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head node (the driver's, ``head_cpus`` CPUs) plus worker nodes, all on this machine.

    ``connect()`` makes this process the cluster's driver; :meth:`kill` takes a worker node
    down with everything on it.
    """

    def __init__(
        self, nodes: Iterable[NodeSpec], head_cpus: float = 0, dashboard: bool = False
    ) -> None:
        """``dashboard``: start the head's dashboard too (its job API: ``ray job submit``)."""
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": head_cpus,
                "include_dashboard": dashboard,
                "dashboard_host": "127.0.0.1",
                "object_store_memory": OBJECT_STORE_BYTES,
                "_system_config": FAST_FAILURE_DETECTION,
                # Its own agent port: the default (52365) belongs to any other Ray on this
                # machine (a test session's), and a head whose agent could not bind takes no
                # job submissions ("No available agent to submit job").
                "dashboard_agent_listen_port": free_port(),
            },
        )
        self.nodes: dict[str, Any] = {}
        for spec in nodes:
            self.add(spec, wait=False)
        self.cluster.wait_for_nodes()

    @property
    def dashboard_url(self) -> str:
        """The head's dashboard (job submission) address, ``http://127.0.0.1:PORT``."""
        return "http://" + self.cluster.head_node.address_info["webui_url"]

    @property
    def address(self) -> str:
        """The GCS address (``RAY_ADDRESS`` for a driver or ``ray.init``)."""
        return self.cluster.address

    def connect(self, namespace: str | None = None) -> None:
        """Make this process the cluster's driver (on the head node)."""
        ray.init(address=self.address, namespace=namespace, log_to_driver=False)

    def add(self, spec: NodeSpec, wait: bool = True) -> str:
        """Start one more worker node; returns its Ray node id."""
        node = self.cluster.add_node(
            num_cpus=spec.num_cpus,
            resources=dict(spec.resources),
            object_store_memory=OBJECT_STORE_BYTES,
        )
        self.nodes[spec.name] = node
        if wait:
            self.cluster.wait_for_nodes()
        return node.node_id

    def node_id(self, name: str) -> str:
        """The Ray node id of the worker node ``name``."""
        return self.nodes[name].node_id

    def name_of(self, node_id: str) -> str:
        """The worker node's name for a Ray node id ("head" for the head node)."""
        for name, node in self.nodes.items():
            if node.node_id == node_id:
                return name
        return "head"

    def kill(self, name: str) -> list[int]:
        """Take worker node ``name`` down as a machine dies: SIGKILL every worker process Ray
        placed there and its raylet at once. Returns the worker pids killed."""
        node_id = self.node_id(name)
        pids = [a["pid"] for a in actors() if a["node_id"] == node_id and a["state"] == "ALIVE"]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)
        return pids

    def wait_dead(self, node_id: str, timeout_s: float = 60.0) -> None:
        """Block until the GCS has declared ``node_id`` dead."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"node {node_id[:8]} still alive after {timeout_s}s")

    def shutdown(self) -> None:
        """Disconnect the driver and stop every node."""
        ray.shutdown()
        self.cluster.shutdown()


def actors() -> list[dict[str, Any]]:
    """Every actor the GCS knows (alive or dead): name, node id, pid and state. Ray's state from
    its GCS directly: the dashboard's state API is not needed."""
    from ray._private.state import state  # the GCS accessor behind ray.nodes()

    out = []
    for entry in state.actor_table(None).values():
        out.append(
            {
                "name": entry.get("Name", ""),
                "node_id": entry["Address"]["NodeID"],
                "pid": entry.get("Pid", 0),
                "state": entry["State"],
            }
        )
    return out
