"""A whole node lost mid-run, on a multi-node Ray cluster on this machine. Prints one JSON line.

    .venv/bin/python benchmarks/node_loss.py [--steps 4]

The cluster (rayrlhf.local_cluster): a head node (the driver, no CPUs for actors), a learner
node and two worker nodes, each its own raylet. Custom resources keep the roles apart, as node
types would on a real cluster: ``learner_host`` for the 2 learner ranks (ZeRO-3, packed),
``worker_host`` for 2 rollout actors (spread: one per worker node), 1 reward and 1 reference
actor (packed). First the same tiny PPO config runs with nothing lost (the test reads where
every actor was placed from the GCS's actor table); then:

- **case 1, worker node lost**: mid-step 2, a spare worker node joins and the worker node
  holding the most actors (a rollout worker and the reward and reference actors: the second
  worker node has room for one actor only) dies: its raylet and every worker process
  SIGKILLed. Its actors are replaced on the surviving nodes, the chunks they held are
  generated again;
- **case 2, learner node lost**: mid-step 4 (checkpoint at step 2, step 3 trained), a spare
  learner node joins and the node holding the learner ranks dies. The learner group restarts
  from the checkpoint on the spare and the run finishes.

Figures per case: the node killed, the actors lost by role, worker and learner restarts, samples
trained, lost and duplicated, and whether parameters, optimizer state and metrics equal the
clean run's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from run_figures import run_trainer, sample_figures, tiny_folder

from rayrlhf.faults import on_dispatch
from rayrlhf.local_cluster import LocalCluster, NodeSpec, actors

PROMPTS_PER_STEP, CHUNK = 8, 2
DISPATCHES_PER_STEP = PROMPTS_PER_STEP // CHUNK
LEARNER_NODE = {"learner_host": 2}
# Room for 3 actors on the first worker node, 1 on the second: the spread rollout workers take
# one slot on each, so the reward and reference actors share the first node with a rollout one.
WORKER_NODE, SMALL_WORKER_NODE = {"worker_host": 3}, {"worker_host": 1}


def _config(folder: Path, name: str, steps: int) -> list[str]:
    return [
        f"model.policy={folder / 'model'}",
        f"data.prompts={folder / 'prompts.jsonl'}",
        "reward.function=rayrlhf.rewards.rules:target_word_frequency",
        f"run.output_dir={folder / 'runs'}",
        f"run.name={name}",
        f"run.num_steps={steps}",
        "run.progress_bar=false",
        "run.log_samples=0",
        "run.checkpoint_every=2",
        "rollout.num_workers=2",
        f"rollout.prompts_per_step={PROMPTS_PER_STEP}",
        f"rollout.chunk_size={CHUNK}",
        "rollout.max_new_tokens=8",
        "rollout.resources={worker_host: 1}",
        "rollout.placement=spread",
        "reward.resources={worker_host: 1}",
        "reference.resources={worker_host: 1}",
        "learner.resources={learner_host: 1}",
        "learner.num_ranks=2",
        "learner.zero_stage=3",
        f"learner.minibatch_size={PROMPTS_PER_STEP}",
        "learner.micro_batch_size=2",
        "learner.policy_lr=1e-3",
        "learner.value_lr=1e-3",
        "timeouts.rollout_s=120",
    ]


def role_of(actor_name: str) -> str:
    """``RUN-PID/rollout-3`` → ``rollout``; a restarted learner group's ``learner-g1-0`` →
    ``learner``."""
    return actor_name.split("/")[-1].split("-")[0]


def placement(cluster: LocalCluster, run_name: str) -> dict[str, list[str]]:
    """Node name → the roles of this run's live actors on it, from the GCS's actor table."""
    out: dict[str, list[str]] = {}
    for a in actors():
        if a["state"] == "ALIVE" and a["name"].startswith(f"{run_name}-"):
            out.setdefault(cluster.name_of(a["node_id"]), []).append(role_of(a["name"]))
    return {node: sorted(roles) for node, roles in sorted(out.items())}


class NodeKiller:
    """At each ``at``-th chunk dispatch of ``losses`` (kind, spare, at): a spare node joins, then
    the node of ``kind`` (name prefix) holding the most of the run's actors dies."""

    def __init__(self, cluster: LocalCluster, losses: list[tuple[str, NodeSpec, int]]) -> None:
        self.cluster, self.losses = cluster, losses
        self.killed: list[dict[str, Any]] = []

    def patch(self, trainer: Any) -> None:
        actions = {
            at: (lambda flight, kind=kind, spare=spare: self.kill(trainer, kind, spare))
            for kind, spare, at in self.losses
        }
        on_dispatch(trainer, actions)

    def kill(self, trainer: Any, kind: str, spare: NodeSpec) -> None:
        before = placement(self.cluster, trainer.config.run.name)
        held = {n: r for n, r in before.items() if n.startswith(kind)}
        victim = max(sorted(held), key=lambda n: len(held[n]))
        self.killed.append(
            {"node": victim, "placement_before": before, "actors_lost": dict(Counter(held[victim]))}
        )
        self.cluster.add(spare)
        node_id = self.cluster.node_id(victim)
        self.cluster.kill(victim)
        self.cluster.wait_dead(node_id)


# Mid-step 2: a worker node. Mid-step 4 (checkpoint at step 2, step 3 trained): a learner node.
WORKER_LOSS = ("worker", NodeSpec("worker-c", 4, WORKER_NODE), DISPATCHES_PER_STEP + 2)
LEARNER_LOSS = ("learner", NodeSpec("learner-b", 2, LEARNER_NODE), 3 * DISPATCHES_PER_STEP + 2)


def node_loss(steps: int, one_run: bool = False) -> dict[str, Any]:
    """The clean run and both cases on one cluster (``one_run``: both losses in one run, as
    CI runs it: a run less); the report."""
    cluster = LocalCluster(
        [
            NodeSpec("learner-a", 2, LEARNER_NODE),
            NodeSpec("worker-a", 4, WORKER_NODE),
            NodeSpec("worker-b", 2, SMALL_WORKER_NODE),
        ]
    )
    try:
        cluster.connect()
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            tiny_folder(folder)
            placed: dict[str, list[str]] = {}

            def record_placement(trainer: Any) -> None:
                at = DISPATCHES_PER_STEP + 1  # step 2: every actor has long been alive
                on_dispatch(trainer, {at: lambda f: placed.update(placement(cluster, "clean"))})

            clean = run_trainer(_config(folder, "clean", steps), record_placement)
            plan = (
                {"both_nodes": [WORKER_LOSS, LEARNER_LOSS]}
                if one_run
                else {"worker_node": [WORKER_LOSS], "learner_node": [LEARNER_LOSS]}
            )
            cases = {}
            for case, losses in plan.items():
                killer = NodeKiller(cluster, losses)
                run = run_trainer(_config(folder, case, steps), killer.patch)
                last = run["rows"][-1]
                cases[case] = {
                    "losses": killer.killed,
                    "worker_restarts": int(last["faults/worker_restarts"]),
                    "learner_restarts": int(last["faults/learner_restarts"]),
                    **sample_figures(run, clean, steps, PROMPTS_PER_STEP),
                    "seconds": run["seconds"],
                }
        return {
            "nodes": 4,  # head, a learner node, two worker nodes (a spare joins before each loss)
            "steps": steps,
            "clean_placement": placed,
            "clean_seconds": clean["seconds"],
            **cases,
        }
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--one-run", action="store_true", help="both losses in one run (CI)")
    args = parser.parse_args()
    print(json.dumps(node_loss(args.steps, args.one_run)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
