"""A job submitted with launch/submit.sh to a multi-node Ray cluster on this machine, its rollout
workers resized across the nodes by `rayrlhf scale` while it runs. Prints one JSON line.

    .venv/bin/python benchmarks/cluster_job.py [--steps 60]

The cluster (rayrlhf.local_cluster): a head with the dashboard (the job API) and no CPUs for
actors, a learner node and two worker nodes; rollout workers spread over the worker nodes
(`rollout.resources={worker_host: 1}`, `rollout.placement=spread`). The job is a tiny PPO run
(`rayrlhf train` through `ray job submit`, the checkout as its working_dir); once its first
step is logged, `rayrlhf scale RUN --rollout-workers 3 --address GCS` asks for three workers.
Figures: the job's exit code, the steps it logged, the rollout workers per step, scale's exit
code and last lines, and the nodes that held rollout workers once it had three (from the GCS's
actor table).

A tiny job's steps take a fraction of a second and `rayrlhf scale` needs seconds to start, so
the job has many steps: with too few, scale arrives after the run ended and rightly finds no
run of that name (what an earlier version of this script measured and took for a Ray bug).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from node_loss import placement
from run_figures import tiny_folder

from rayrlhf.local_cluster import LocalCluster, NodeSpec
from rayrlhf.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RUN = "cluster-job"


def _overrides(folder: Path, steps: int) -> list[str]:
    return [
        f"model.policy={folder / 'model'}",
        f"data.prompts={folder / 'prompts.jsonl'}",
        "reward.function=rayrlhf.rewards.rules:target_word_frequency",
        f"run.output_dir={folder / 'runs'}",
        f"run.name={RUN}",
        f"run.num_steps={steps}",
        "run.progress_bar=false",
        "rollout.num_workers=1",
        "rollout.prompts_per_step=6",
        "rollout.chunk_size=2",
        "rollout.max_new_tokens=8",
        "rollout.placement=spread",
        "rollout.resources={worker_host: 1}",
        "reward.resources={worker_host: 1}",
        "reference.resources={worker_host: 1}",
        "learner.resources={learner_host: 1}",
        "learner.minibatch_size=6",
        "learner.micro_batch_size=6",
    ]


def _wait_for_job_api(url: str, timeout_s: float = 120.0) -> None:
    """Until the head's job agent takes submissions: right after a cluster starts, the
    dashboard answers before its agent has registered ("No available agent to submit job,
    please try again later"). A no-op job is submitted until one is taken, and waited for."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client, deadline = JobSubmissionClient(url), time.monotonic() + timeout_s
    while True:
        try:
            probe = client.submit_job(entrypoint="true")
            break
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    while client.get_job_status(probe) not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the probe job {probe} did not finish in {timeout_s} s")
        time.sleep(0.5)


def _live(name: str) -> bool:
    import ray

    return any(a["name"] == name for a in ray.util.list_named_actors(all_namespaces=True))


def _rows(run_dir: Path) -> list[dict]:
    try:
        return read_metrics(run_dir)
    except (OSError, ValueError):
        return []


def cluster_job(steps: int) -> dict:
    """Start the cluster, submit the job, scale it mid-run; the report."""
    # The job's entrypoint runs `python` on the head node: this environment's.
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    # The CLIs talk to the cluster in the mode it was started with: this process's, which Ray
    # read at import (token where the caller set it, as a test session may, else none).
    auth = os.environ.get("RAY_AUTH_MODE", "disabled")
    cluster = LocalCluster(
        [
            NodeSpec("learner-a", 2, {"learner_host": 1}),
            NodeSpec("worker-a", 3, {"worker_host": 3}),
            NodeSpec("worker-b", 3, {"worker_host": 3}),
        ],
        dashboard=True,
    )
    try:
        cluster.connect()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            tiny_folder(folder)
            args = ["bash", str(ROOT / "launch" / "submit.sh"), "/dev/null"]
            for item in _overrides(folder, steps):
                args += ["--set", item]
            _wait_for_job_api(cluster.dashboard_url)
            env = {**os.environ, "RAY_ADDRESS": cluster.dashboard_url, "RAY_AUTH_MODE": auth}
            start = time.monotonic()
            job = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)  # fmt: skip
            run_dir = folder / "runs" / RUN
            # Once the first step is logged, while the run is live: a tiny job's steps take
            # under a second, and `rayrlhf scale` starts a Python that imports Ray (seconds),
            # so the job has many steps to leave it the time.
            while not (_rows(run_dir) and _live(f"control/{RUN}")) and job.poll() is None:
                time.sleep(0.2)
            scale = subprocess.run(
                [sys.executable, "-m", "rayrlhf.cli", "scale", RUN, "--rollout-workers", "3",
                 "--address", cluster.address],
                capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": auth},
            )  # fmt: skip
            placed: dict[str, list[str]] = {}
            while job.poll() is None:
                now = placement(cluster, RUN)
                if sum(r.count("rollout") for r in now.values()) == 3:
                    placed = now
                    break
                time.sleep(0.5)
            log, _ = job.communicate(timeout=600)
            rows = _rows(run_dir)
        return {
            "nodes": 4,
            "job_exit_code": job.returncode,
            "job_seconds": round(time.monotonic() - start, 1),
            "steps_logged": [int(r["step"]) for r in rows],
            "rollout_workers_per_step": [int(r["rollout/workers"]) for r in rows],
            "scale_exit_code": scale.returncode,
            "scale_output": (scale.stdout + scale.stderr).strip().splitlines()[-4:],
            "placement_with_3_rollout_workers": placed,
            "job_log_tail": log.strip().splitlines()[-12:],
        }
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    print(json.dumps(cluster_job(args.steps)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
