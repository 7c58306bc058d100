"""``rayrlhf plan [CONFIG] [options]``: the command line of the memory planner.

Without CONFIG the options describe the run (defaults: a GPT-NeoX-20B shape on one 8 × 80 GiB
node); with it the run's config fills them in (:mod:`rayrlhf.planner.from_config`) and options
given on the command line still win. Exit status: 0 when a configuration fits, 1 when none does,
2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rayrlhf.algos.algorithms import ALGORITHMS
from rayrlhf.planner import from_config as fc
from rayrlhf.planner import lora_report as lr
from rayrlhf.planner import memory as m
from rayrlhf.planner.lora import ALL_LINEAR, REFERENCE_MODES, Tuning, lora_plan
from rayrlhf.planner.plan import Cluster, Workload, place, plan, search
from rayrlhf.planner.report import learner_table, others_table, to_json, verdict
from rayrlhf.planner.shapes import PRESETS, ModelShape, shape_of, without_critic

DEFAULT_MODEL = "gpt-neox-20b"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="rayrlhf plan",
        description=(
            "Per-GPU memory plan for PPO: learner (policy + value, DeepSpeed ZeRO), rollout, "
            "reference and reward GPUs, for every ZeRO stage and offload choice; full "
            "fine-tuning or LoRA."
        ),
    )
    ap.add_argument(
        "config",
        nargs="?",
        default=None,
        help="a run's YAML config: its roles, shapes, model.lora and reference.mode (optional)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override of CONFIG, e.g. --set model.lora.rank=64 (repeatable)",
    )
    ap.add_argument(
        "--model",
        default=None,
        help=f"preset ({', '.join(PRESETS)}) or local HF folder (default: CONFIG's model.policy, "
        f"else {DEFAULT_MODEL})",
    )
    ap.add_argument(
        "--reward-model",
        default=None,
        help="preset/folder of the reward model (default: --model); 'none' = function",
    )
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--gpu-mem-gb", type=float, default=80.0, help="GiB per GPU")
    ap.add_argument("--cpu-mem-gb", type=float, default=1024.0, help="GiB of RAM per node")
    ap.add_argument("--learner-gpus", type=int, default=None, help="default: half the GPUs")
    ap.add_argument("--rollout-gpus", type=int, default=None, help="default: half the rest")
    ap.add_argument(
        "--spread-learner",
        action="store_true",
        help="learner ranks spread evenly over nodes (learner.placement: spread); default: packed",
    )
    ap.add_argument("--micro-batch", type=int, default=1, help="training sequences per GPU")
    ap.add_argument("--seq-len", type=int, default=1024, help="prompt + response tokens")
    ap.add_argument("--rollout-batch", type=int, default=16, help="sequences per generate call")
    ap.add_argument(
        "--flash-attention",
        action="store_true",
        help="no s×s attention scores in memory (SDPA/flash kernels)",
    )
    ap.add_argument(
        "--zero-stage",
        type=int,
        choices=(0, 1, 2, 3),
        action="append",
        help="only this stage (repeatable)",
    )
    ap.add_argument(
        "--rollout-backend",
        choices=("hf", "vllm"),
        default="hf",
        help="rollout.backend: vLLM reserves --vllm-memory of each rollout GPU up front",
    )
    ap.add_argument(
        "--vllm-memory",
        type=float,
        default=0.5,
        help="rollout.vllm.gpu_memory_utilization (with --rollout-backend vllm)",
    )
    ap.add_argument(
        "--tensor-parallel",
        type=int,
        default=1,
        help="rollout.vllm.tensor_parallel_size: GPUs one vLLM engine spans",
    )
    ap.add_argument(
        "--algorithm",
        default="ppo",
        choices=list(ALGORITHMS),
        help="online algorithm (algorithm.name); a critic-free one plans no value model",
    )
    ap.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        help="model.lora.rank: train rank-r adapters on a frozen bf16 base (0: full fine-tuning)",
    )
    ap.add_argument(
        "--lora-targets",
        default=ALL_LINEAR,
        help="model.lora.target_modules: all-linear, or module names joined by commas",
    )
    ap.add_argument(
        "--reference",
        choices=REFERENCE_MODES,
        default="workers",
        help="reference.mode: workers (GPUs of their own), learner (LoRA: adapters disabled), "
        "none (no KL)",
    )
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    return ap


def _args(argv: list[str] | None) -> tuple[argparse.Namespace, Any]:
    """Options with CONFIG's values as defaults; the loaded config (None without one).

    Raises ValueError for a config that does not load or names no model shape.
    """
    from rayrlhf.config import ConfigError, load

    ap = _parser()
    args = ap.parse_args(argv)
    if args.config is None:
        args.model = args.model or DEFAULT_MODEL
        return args, None
    try:
        config = load(args.config, args.overrides)
    except ConfigError as err:
        raise ValueError(str(err)) from None
    ap.set_defaults(**fc.defaults(config))
    args = ap.parse_args(argv)  # the command line's own options win over the config's
    if args.model is None:
        raise ValueError(
            f"{args.config}: model.policy {config.model.policy!r} is not a local folder and "
            f"names no preset ({', '.join(PRESETS)}): give --model"
        )
    return args, config


def tuning(args: argparse.Namespace, shape: ModelShape) -> Tuning:
    """LoRA (rank > 0) and where the reference runs, from the options."""
    lp = None
    if args.lora_rank:
        targets: str | tuple[str, ...] = ALL_LINEAR
        if args.lora_targets != ALL_LINEAR:
            targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        lp = lora_plan(shape, args.lora_rank, targets)
    if args.reference == "learner" and lp is None:
        raise ValueError(
            "--reference learner (reference.mode: learner) needs LoRA: the learner computes "
            "the reference log-probs by disabling its adapters"
        )
    return Tuning(lp, args.reference)


def main(argv: list[str] | None = None) -> int:
    """Print the plan (or JSON); 0 when a configuration fits, 1 when none does, 2 on bad input."""
    try:
        args, config = _args(argv)
        full = shape_of(args.model)
        shape = full if ALGORITHMS[args.algorithm].critic else without_critic(full)
        rname = args.reward_model or args.model
        reward = None if rname == "none" else full if rname == args.model else shape_of(rname)
        tune = tuning(args, shape)
        cl = Cluster(args.nodes, args.gpus_per_node, args.gpu_mem_gb, args.cpu_mem_gb)
        lrn = args.learner_gpus if args.learner_gpus is not None else max(1, cl.gpus // 2)
        ro = args.rollout_gpus if args.rollout_gpus is not None else max(1, (cl.gpus - lrn) // 2)
        plc = place(cl, lrn, ro, reward is not None, args.spread_learner, tune.reference_gpus)
        if plc.colocated and args.rollout_backend == "vllm" and args.tensor_parallel > 1:
            raise ValueError("vLLM tensor parallelism needs whole GPUs for rollout alone")
    except (ValueError, OSError) as err:
        print(f"rayrlhf plan: {err}", file=sys.stderr)
        return 2
    vllm = args.vllm_memory if args.rollout_backend == "vllm" else None
    work = Workload(
        args.micro_batch,
        args.seq_len,
        args.rollout_batch,
        args.flash_attention,
        vllm,
        args.tensor_parallel if vllm is not None else 1,
    )
    stages = sorted(set(args.zero_stage or [0, 1, 2, 3]))
    p = plan(shape, reward, cl, work, plc, stages, tune)
    alt = None
    if not p["fitting"]:
        alt = search(shape, reward, cl, work, stages, args.spread_learner, tune)
    lines = verdict(p, cl, shape, plc, alt)
    if config is not None:  # the config's own stage, offload and checkpointing
        lines.append(fc.chosen_line(p, cl, args.config, fc.chosen(config)))
    if args.json:
        data = to_json(p, cl, work, shape, reward, plc, lines)
        data["config"] = args.config
        print(json.dumps(data, indent=1))
        return 0 if p["fitting"] else 1
    print(
        f"{shape.name}: seq {work.seq_len}, micro-batch {work.micro_batch}, rollout batch "
        f"{work.rollout_batch}; overhead = {m.CONTEXT_BYTES // m.GIB} GiB CUDA context "
        f"per process + {m.FRAGMENTATION:.0%} fragmentation"
    )
    if config is not None:
        print(fc.source_line(config, args.config, args.model))
    print("\n".join(lr.tuning_lines(shape, tune)) + "\n")
    print(learner_table(p, cl, shape, plc) + "\n")
    print(others_table(p, cl, plc) + "\n")
    print("\n".join(lines))
    return 0 if p["fitting"] else 1
