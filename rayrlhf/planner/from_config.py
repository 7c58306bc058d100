"""``rayrlhf plan CONFIG``: a run's config as the planner's options, and its own choice checked.

The config gives the roles' GPUs (``learner.num_ranks``; ``rollout.num_workers`` × vLLM's tensor
parallel size), the token shapes (micro-batch, prompt + response tokens, rows per generate call),
the rollout engine, the algorithm, ``model.lora`` and where the reference runs. The cluster
(nodes, GPUs, memory) is not in a config and stays on the command line; options given there win
over the config's. Every ZeRO stage is still planned: the config's own stage, offload and
checkpointing get a line of their own (:func:`chosen_line`).

The model is ``model.policy`` when that is a local HF folder, else the preset its folder's name
contains (``/models/gpt-neox-20b-sft`` plans ``gpt-neox-20b``): a cluster config whose paths
exist only on the cluster plans anywhere; ``--model`` names the shape otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from rayrlhf.config import Config
from rayrlhf.planner import memory as m
from rayrlhf.planner.lora import ALL_LINEAR
from rayrlhf.planner.placement import Cluster
from rayrlhf.planner.shapes import PRESETS


def model_of(path: str) -> str | None:
    """A local folder as is, else the longest preset name in its folder's name (None: none)."""
    if os.path.isdir(path):
        return path
    base = os.path.basename(os.path.normpath(path))
    found = [name for name in PRESETS if name in base]
    return max(found, key=len) if found else None


def reference_mode(config: Config) -> str:
    """``workers``, ``learner`` or ``none`` (no KL weight: no reference runs at all)."""
    return config.reference.mode if config.uses_reference else "none"


def defaults(config: Config) -> dict[str, Any]:
    """The planner's option defaults (argparse ``dest`` names) from a loaded config."""
    r, lrn = config.rollout, config.learner
    tp = r.vllm.tensor_parallel_size if r.backend == "vllm" else 1
    out: dict[str, Any] = {
        "learner_gpus": lrn.num_ranks,
        "rollout_gpus": r.num_workers * tp,  # one engine spans tp GPUs
        "spread_learner": lrn.placement == "spread",
        "micro_batch": lrn.micro_batch_size,
        "seq_len": r.max_prompt_tokens + r.response_budget,
        "rollout_batch": r.chunk_size * r.group_size,  # rows of one generate call
        "rollout_backend": r.backend,
        "vllm_memory": r.vllm.gpu_memory_utilization,
        "tensor_parallel": r.vllm.tensor_parallel_size,
        "algorithm": config.algorithm.name,
        "reference": reference_mode(config),
    }
    policy = model_of(config.model.policy)
    if policy is not None:
        out["model"] = policy
    rw = config.reward
    if rw.model is not None:
        out["reward_model"] = model_of(rw.model)  # None: the policy's shape
    elif rw.function is not None or rw.url is not None:
        out["reward_model"] = "none"  # a function on CPU, or a server elsewhere
    lora = config.model.lora
    if lora is not None:
        targets = lora.target_modules
        out["lora_rank"] = lora.rank
        out["lora_targets"] = targets if targets == ALL_LINEAR else ",".join(targets)
    return out


def chosen(config: Config) -> tuple[int, str, bool]:
    """The config's own (ZeRO stage, offload, gradient checkpointing)."""
    lrn = config.learner
    offload = {
        (False, False): "none",
        (True, False): "optimizer",
        (True, True): "optimizer+params",
        (False, True): "params",  # not a choice the planner tables
    }[(lrn.offload_optimizer, lrn.offload_params)]
    return lrn.zero_stage, offload, lrn.gradient_checkpointing


def chosen_line(p: dict[str, Any], cl: Cluster, path: str, choice: tuple[int, str, bool]) -> str:
    """Whether the config's own stage, offload and checkpointing fit, with its figures."""
    stage, offload, ck = choice
    what = f"ZeRO-{stage} offload={offload}, gradient checkpointing {'on' if ck else 'off'}"
    row = next((r for r in p["rows"] if (r.stage, r.offload) == (stage, offload)), None)
    if row is None:
        return f"CONFIG {path}: {what}: not planned here (--zero-stage, or not a DeepSpeed choice)"
    fits = row.fits(ck, p["learner_budget"], cl.cpu_mem_gib * m.GIB) and p["others_fit"]
    return (
        f"CONFIG {path}: {what}: learner {row.total[ck] / m.GIB:.1f} GiB/GPU (start-up "
        f"{row.init_peak / m.GIB:.1f}), CPU RAM on node 0 {row.cpu_node / m.GIB:.0f} GiB, "
        f"other GPUs {'fit' if p['others_fit'] else 'DO NOT fit'}: "
        f"{'FITS' if fits else 'DOES NOT FIT'}"
    )


def source_line(config: Config, path: str, model: str) -> str:
    """Where the planned shape comes from: the policy's folder, or the preset it names."""
    policy = config.model.policy
    if model == policy:
        return f"CONFIG {path}: model.policy {policy} (local folder)"
    how = "named by" if model_of(policy) == model else "given by --model instead of"
    return f"CONFIG {path}: shape {model} (preset), {how} model.policy {policy}"
