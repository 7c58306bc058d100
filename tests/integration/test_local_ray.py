"""The Ray that rayrlhf starts on this machine: every listener on loopback (Prometheus metrics
endpoints included), and no advice to turn token authentication off. Started in a subprocess
(the test session's own Ray is already up in this one)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """
import json, os, psutil, ray
from rayrlhf import cluster
from rayrlhf.config import load

config = load(None, [f"model.policy=/m", "data.prompts=/p.jsonl", "reward.function=a:b"])
cluster.ensure_ray(config)

@ray.remote(num_cpus=0)
class Ping:
    def pid(self):
        return os.getpid()

ray.get(Ping.remote().pid.remote())
me = psutil.Process()
pids = {p.pid for p in me.children(recursive=True)} | {me.pid}
listening = [
    [c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()]
    for c in psutil.net_connections("inet")
    if c.status == psutil.CONN_LISTEN and c.pid in pids
]
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "listening": listening}))
ray.shutdown()
"""

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_local_ray_listens_on_loopback_only(tmp_path):
    env = {
        **os.environ,
        # Ray's fixed metrics ports may be taken by the test session's Ray: other free ones.
        "AUTOSCALER_METRIC_PORT": str(_free_port()),
        "DASHBOARD_METRIC_PORT": str(_free_port()),
        "RAY_DASHBOARD_PORT": str(_free_port()),
    }
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["gcs"].startswith("127.0.0.1:")
    assert len(found["listening"]) >= 5  # gcs, raylet, dashboard, agents, metrics, workers
    exposed = [entry for entry in found["listening"] if entry[0] not in LOOPBACK]
    assert not exposed, exposed
    assert "RAY_AUTH_MODE=disabled" not in done.stderr + done.stdout
