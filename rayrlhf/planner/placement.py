"""Which GPUs each of PPO's roles gets: the cluster, the token shapes, and the split.

One learner rank or one rollout worker per GPU; the GPUs left over hold the reference and reward
workers (half each, or both on one GPU with ``num_gpus: 0.5`` when one is left). A reference
computed by the learner (LoRA, ``reference.mode: learner``) or none at all (no KL) gives its GPUs
to the others. One- and two-GPU machines share a GPU between roles through fractional
``num_gpus`` (:mod:`rayrlhf.planner.shared`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rayrlhf.planner import shared as sh


@dataclass(frozen=True)
class Cluster:
    """Nodes × GPUs per node; memory per GPU and per node in GiB."""

    nodes: int = 1
    gpus_per_node: int = 8
    gpu_mem_gib: float = 80.0
    cpu_mem_gib: float = 1024.0

    @property
    def gpus(self) -> int:
        """All GPUs in the cluster."""
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Workload:
    """Token shapes: training micro-batch, prompt+response length, sequences per generate call;
    the rollout engine: ``vllm_memory`` is vLLM's ``gpu_memory_utilization`` (None: Hugging
    Face generate) and ``tensor_parallel`` the GPUs one engine spans."""

    micro_batch: int = 1
    seq_len: int = 1024
    rollout_batch: int = 16
    flash: bool = False
    vllm_memory: float | None = None
    tensor_parallel: int = 1


@dataclass(frozen=True)
class Placement:
    """GPUs per role; ``shared``: reference and reward share one GPU (0.5 each); ``spread``: the
    learner ranks are spread evenly over the nodes (``learner.placement: spread``) instead of
    packed onto the first ones; ``colocated``: the roles sharing one GPU with fractional
    ``num_gpus`` on a one- or two-GPU machine (the counts are then one process per role)."""

    learner: int
    rollout: int
    reference: int
    reward: int
    shared: bool = False
    spread: bool = False
    colocated: tuple[str, ...] = ()

    @property
    def learner_shares(self) -> bool:
        """Whether the learner rank shares its GPU with other roles (a one-GPU machine)."""
        return "learner" in self.colocated

    def num_gpus(self) -> dict[str, float]:
        """Ray's ``num_gpus`` per role of a co-located placement (empty for whole GPUs)."""
        if not self.colocated:
            return {}
        whole = {} if self.learner_shares else {"learner": 1.0}
        return whole | sh.fractions(self.colocated)

    def roles_on_node0(self, cluster: Cluster) -> list[str]:
        """The roles of node 0's GPUs (the busiest node: learner rank 0 and weight sync)."""
        if self.colocated:  # one process per role: the learner's GPU 0, and GPU 1 if on node 0
            beside = self.learner_shares or cluster.gpus_per_node > 1
            return ["learner"] + [r for r in self.colocated if r != "learner" and beside]
        other = ["reference+reward"] if self.shared else ["reference"] * self.reference
        other += [] if self.shared else ["reward"] * self.reward
        n = cluster.gpus_per_node
        ranks = -(-self.learner // cluster.nodes) if self.spread else self.learner
        ranks = min(ranks, n)
        return (["learner"] * ranks + ["rollout"] * self.rollout + other)[:n]


def place(
    cluster: Cluster,
    learner: int,
    rollout: int,
    reward_model: bool,
    spread: bool = False,
    reference: bool = True,
) -> Placement:
    """Split the cluster's GPUs; raises ValueError when a role gets none.

    ``reference``: reference workers want GPUs (False: the learner computes the reference
    log-probs, or there is no KL). One learner rank and one rollout worker on a one- or two-GPU
    machine share GPUs instead (fractional ``num_gpus``, :mod:`rayrlhf.planner.shared`).
    """
    left = cluster.gpus - learner - rollout
    wanting = [r for r, on in (("reference", reference), ("reward", reward_model)) if on]
    least = 1 if wanting else 0  # the roles beside learner and rollout share what is left
    if left < least and learner == rollout == 1 and cluster.gpus in (1, 2):
        roles = sh.colocated_roles(cluster.gpus, reward_model, reference)
        return Placement(1, 1, int(reference), int(reward_model), spread=spread, colocated=roles)
    if learner < 1 or rollout < 1 or left < least:
        rest = f" and at least one GPU for {'/'.join(wanting)}" if wanting else ""
        raise ValueError(
            f"{cluster.gpus} GPUs cannot hold {learner} learner + {rollout} rollout GPUs{rest}"
        )
    if not reward_model:  # a reward function runs on CPU
        return Placement(learner, rollout, left if reference else 0, 0, spread=spread)
    if not reference:
        return Placement(learner, rollout, 0, left, spread=spread)
    if left == 1:
        return Placement(learner, rollout, 1, 1, shared=True, spread=spread)
    return Placement(learner, rollout, (left + 1) // 2, left // 2, spread=spread)
