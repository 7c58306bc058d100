"""Which config fields decide a result: the one rule that checkpoint refusal, stage skipping and
the pipeline's fingerprints all read.

- **Execution** fields say where and how visibly a run executes, never what it computes:
  placement and resources at any depth, worker counts, how weights travel, timeouts, restart
  limits, checkpoint cadence and logging. Changing them keeps checkpoints and finished stages.
- **Length** fields decide what a finished run reports but not the steps already taken: the
  number of steps (to extend a run) and the held-out evaluation. A resume may change them; a
  finished stage's fingerprint holds them.
- Every other field decides the math: a checkpoint refuses a change of it by its dotted path,
  and a finished stage whose fingerprint it changes is refused too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Leaves that never decide a result, wherever they sit: placement and resources.
EXECUTION_LEAVES = frozenset({"num_cpus", "num_gpus", "placement", "resources", "master_port"})
# Leaves of a learner or reference section (any stage's) that say how its forward passes are cut
# and laid out (packed or padded, micro-batch budgets), the optimizer kernel, and the peak MFU is
# measured against: the same math, to float rounding, as the rank count is. (``sft.packing``,
# which packs examples into fewer items, does decide a result.)
ENGINE_EXECUTION_LEAVES = frozenset(
    {"packing", "max_tokens_per_micro_batch", "fused_optimizer", "peak_tflops"}
)
# Fields and whole sections that never decide a result.
EXECUTION_PATHS = frozenset(
    {
        "run.name",
        "run.output_dir",
        "run.progress_bar",
        "run.log_samples",
        "run.checkpoint_every",
        "run.keep_checkpoints",
        "run.resume",
        "run.max_worker_restarts",
        "run.max_learner_restarts",
        "run.trackers",
        "run.mlflow",
        "run.wandb",
        "rollout.num_workers",
        "reward.num_workers",
        "reference.num_workers",
        "reference.mode",  # the same frozen policy, in workers or in the learner
        "timeouts",
        "weight_sync",  # how weights travel, not what they are
        "env_workers",  # where environments run, not what they answer (seeded by sample id)
    }
)
# Decide a finished run's report, not the steps taken so far: a resume may change them.
LENGTH_PATHS = frozenset({"run.num_steps", "eval"})
# Supervised stages: their own length fields, by stage (a resume may extend a stage too).
STAGE_LENGTH_FIELDS = ("max_steps", "eval_every", "epochs")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted.path: leaf}`` of a nested dict (an empty section stays, as ``{}``)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _under(path: str, paths: set[str] | frozenset[str]) -> bool:
    parts = path.split(".")
    return bool({".".join(parts[: i + 1]) for i in range(len(parts))} & paths)


def is_execution(path: str) -> bool:
    """Whether the field at dotted ``path`` only says where and how a run executes."""
    parts = path.split(".")
    engine_leaf = len(parts) > 1 and parts[-2] in ("learner", "reference")
    return (
        parts[-1] in EXECUTION_LEAVES
        or (engine_leaf and parts[-1] in ENGINE_EXECUTION_LEAVES)
        or _under(path, EXECUTION_PATHS)
    )


def changed_fields(saved: dict[str, Any], now: dict[str, Any], free: set[str]) -> list[str]:
    """Dotted paths whose values differ between two config trees and decide the math: neither
    execution fields, nor length fields, nor under ``free`` (a stage's own length fields)."""
    a, b = flatten(saved), flatten(now)
    differ = [p for p in set(a) | set(b) if a.get(p) != b.get(p)]  # unset (None) ≡ absent
    may_change = set(LENGTH_PATHS) | set(free)
    return sorted(p for p in differ if not is_execution(p) and not _under(p, may_change))


def stage_length_fields(stage: str) -> set[str]:
    """A supervised stage's length fields (``sft.max_steps``, ...)."""
    return {f"{stage}.{name}" for name in STAGE_LENGTH_FIELDS}


SUPERVISED = ("sft", "reward_model", "dpo", "ilql")


def stage_tree(tree: dict[str, Any], stage: str) -> dict[str, Any]:
    """The part of a whole config tree that decides what ``stage`` trains.

    SFT, DPO and ILQL train ``model.policy``, showing prompts as the rollout workers do; the
    reward model reads its own section; the online stage (any other name) reads everything but
    the upstream stages, and so does a pipeline's third stage with its held-out evaluation.
    """
    if stage in SUPERVISED:
        part = {stage: tree[stage], "run": {"seed": tree["run"]["seed"]}}
        if stage != "reward_model":
            # model.lora too (absent unset: a fingerprint from before LoRA stays valid).
            part["model"] = {k: tree["model"].get(k) for k in ("policy", "tokenizer", "lora")}
            part["rollout"] = {k: tree["rollout"][k] for k in ("template", "plain_template")}
        return part
    return {k: v for k, v in tree.items() if k not in ("sft", "reward_model")}


# Fields added after finished stages existed whose default is unset (None): left out of a
# fingerprint while unset, so a stage finished before them keeps its fingerprint.
ADDED_UNSET = frozenset({"model.lora"})


def decided_fields(part: dict[str, Any]) -> dict[str, Any]:
    """``{dotted.path: value}`` of the fields of ``part`` that decide a result (an
    :data:`ADDED_UNSET` field only when set)."""
    return {
        p: v
        for p, v in flatten(part).items()
        if not is_execution(p) and not (v is None and p in ADDED_UNSET)
    }


def fingerprint(part: dict[str, Any], *extra: Any) -> str:
    """A short hash of the fields of ``part`` that decide a result (and of ``extra``)."""
    decided = decided_fields(part)
    text = json.dumps([sorted(decided.items()), *extra], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
