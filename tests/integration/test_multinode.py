"""A multi-node Ray cluster on this machine (head, a learner node, two worker nodes; each its own
raylet): roles placed by their resources and placement, then a whole node lost mid-run, once
with rollout, reward and reference actors on it and once with the learner ranks. Runs
benchmarks/node_loss.py (its own cluster, in its own process: the session's Ray stays as it
is) and checks its report; and a job submitted to such a cluster with launch/submit.sh, resized
by `rayrlhf scale` while it runs (benchmarks/cluster_job.py, likewise in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _benchmark(*args: str) -> dict:
    """Run benchmarks/ARGS[0] with the rest as its arguments; its one JSON line."""
    script, *rest = args
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *rest],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report() -> dict:
    return _benchmark("node_loss.py", "--steps", "4", "--one-run")


def test_roles_are_placed_by_resources_and_placement(report):
    placed = report["clean_placement"]  # node → roles of the live actors, from the GCS
    assert placed["learner-a"] == ["learner", "learner"]  # packed, on the learner node only
    # Rollout workers spread, one per worker node; reward and reference where room is left.
    assert placed["worker-a"] == ["reference", "reward", "rollout"]
    assert placed["worker-b"] == ["rollout"]
    assert "head" not in placed  # the driver's node holds no role actor


def test_nodes_lost_mid_run_cost_no_sample(report):
    """One run loses a worker node mid-step 2 and a learner node mid-step 4 (the benchmark
    runs the two cases apart too); it equals the run that lost nothing."""
    case = report["both_nodes"]
    worker, learner = case["losses"]
    assert worker["node"] == "worker-a"
    assert worker["actors_lost"] == {"reference": 1, "reward": 1, "rollout": 1}
    assert learner["node"] == "learner-a" and learner["actors_lost"] == {"learner": 2}
    # The replacements went to the surviving nodes (the spare joined before the loss).
    assert "worker-a" not in learner["placement_before"]
    assert case["worker_restarts"] == 3 and case["learner_restarts"] == 1
    assert case["samples_trained"] == 32
    assert case["samples_lost"] == 0 and case["samples_duplicated"] == 0
    assert case["params_equal_clean_run"] and case["metrics_equal_clean_run"]


def test_a_submitted_job_runs_to_the_end_and_scales_across_nodes():
    """`ray job submit` (launch/submit.sh) on a head, a learner node and two worker nodes; once
    its first step is logged, `rayrlhf scale` (another process) asks for 3 rollout workers."""
    job = _benchmark("cluster_job.py", "--steps", "60")
    assert job["job_exit_code"] == 0, "\n".join(job["job_log_tail"])
    assert job["steps_logged"] == list(range(1, 61))
    assert job["scale_exit_code"] == 0, job["scale_output"]
    workers = job["rollout_workers_per_step"]
    assert workers[0] == 1 and workers[-1] == 3  # resized mid-run, kept to the end
    assert workers == sorted(workers) and set(workers) == {1, 3}
    placed = job["placement_with_3_rollout_workers"]
    # Spread over both worker nodes (only they offer worker_host); none on the learner node.
    on = {node: roles.count("rollout") for node, roles in placed.items()}
    assert on.get("worker-a", 0) >= 1 and on.get("worker-b", 0) >= 1
    assert sum(on.values()) == 3 and on.get("learner-a", 0) == 0
