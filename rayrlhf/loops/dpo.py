"""The DPO stage: the reference's log-probs once, by the reference workers, then the learners.

    STAGE_DIR/reference_logprobs/part-K-of-N.pt   the frozen policy's log-probs, worker K of N
    STAGE_DIR/checkpoints, metrics.jsonl, model   as in every supervised stage

The reference is the policy the stage starts from (``model.policy``: the SFT model in a
pipeline). Its parts are computed before the learner group starts and kept, so a resumed or
restarted stage never computes them again; a reference worker that dies is replaced and its
part computed again (up to ``run.max_worker_restarts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayrlhf import cluster
from rayrlhf.config import Config, from_dict, to_dict
from rayrlhf.faults import RunFailed, is_lost, one_line
from rayrlhf.roles.preference_reference import PreferenceReference, part_path


def reference_logprobs(config: Config, stage_dir: Path) -> Path:
    """The folder of the reference's log-probs for ``config.dpo``, computing missing parts."""
    folder = stage_dir / "reference_logprobs"
    count = config.reference.num_workers
    for stale in folder.glob("part-*.pt"):  # from a run with another worker count
        if not stale.name.endswith(f"-of-{count:03d}.pt"):
            stale.unlink()
    missing = [i for i in range(count) if not part_path(folder, i, count).exists()]
    if not missing:
        return folder
    cluster.ensure_ray(config)
    group = cluster.role_group(config, PreferenceReference, "reference", lambda i: (config,))
    restarts = 0
    try:

        def submit(index: int) -> Any:
            return group.actors[index].logprobs.remote(str(folder), index, count)

        pending = {i: submit(i) for i in missing}
        while pending:
            index, ref = next(iter(pending.items()))
            try:
                ray.get(ref, timeout=config.timeouts.train_s)
                del pending[index]
            except Exception as err:
                if not is_lost(err) or restarts >= config.run.max_worker_restarts:
                    raise RunFailed(
                        f"dpo reference worker {index} failed: {one_line(err)}; the parts "
                        f"computed stand in {folder}: run the same command again"
                    ) from err
                restarts += 1
                group.replace(group.actors[index])
                pending[index] = submit(index)
    finally:
        group.shutdown()
    return folder


def with_reference(config: Config, folder: Path) -> Config:
    """``config`` whose ``dpo.reference_logprobs`` names ``folder``."""
    tree = to_dict(config)
    tree["dpo"]["reference_logprobs"] = str(folder)
    return from_dict(tree)


def run_dpo_stage(config: Config, stage_dir: Path) -> dict[str, Any]:
    """Reference log-probs, then DPO on the learner ranks; the model goes to ``stage_dir/model``."""
    from rayrlhf.loops.supervised import run_supervised_stage

    folder = reference_logprobs(config, stage_dir)
    return run_supervised_stage(with_reference(config, folder), "dpo", stage_dir)
