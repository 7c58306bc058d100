"""A learner rank and an HF rollout worker in-process on one GPU, bf16, without Ray (issue 21).

    python3 benchmarks/gpu_inprocess.py [--device cuda] [--rows 64] [--prompt-tokens 512]
        [--new-tokens 256] [--steps 3] [--variants full-packed,full-padded,lora-packed,lora-padded]
        [--peak-tflops 790] [--algorithm grpo] [--budget-s 480] [--out FILE]
    .venv/bin/python benchmarks/gpu_inprocess.py --device cpu --tiny      # the CPU smoke run

A random-weight model of Llama-3.2-1B's shape (the planner's ``llama-1b`` preset; ``--tiny``: a
tiny Llama) with the word-level test tokenizer is written to a temporary folder. Each variant
(packed or padded rows, LoRA adapters or full fine-tuning) builds the real roles as plain
classes: a :class:`Learner` rank (DeepSpeed engine, a one-rank group), an HF
:class:`RolloutWorker` and one :class:`ReferenceWorker` shared by all variants. Each step syncs
the learner's weights into the rollout copy (``policy_state_dict`` → ``load_weights``: time and
bytes, full weights or adapters), generates one chunk of ``--rows`` rows (tokens/s), compares the
rollout's log-probs with the learner's own forward over the same rows, and trains one step on
that chunk (train-phase seconds, tokens/s, TFLOP/s and MFU against ``--peak-tflops``).

Responses are cut (seeded) to 25-100 % of ``--new-tokens``, since a random model almost
never samples EOS: packing then has padding to remove. One JSON line per variant, then a summary
line; never fails on a time (``--budget-s`` skips the variants left once spent). Without Ray
installed a stub stands in for the modules that import it at module level; the report names them.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from rayrlhf.experience import Rollout
    from rayrlhf.perf import FlopCounter
    from rayrlhf.roles.learner import Learner

ROOT = Path(__file__).resolve().parents[1]
# What the roles import at module level beyond torch (module, or module:pip name). peft (and
# its accelerate) too, even for full fine-tuning: the learner imports rayrlhf.lora, which
# imports peft.
REQUIRED = "transformers numpy deepspeed pydantic yaml:pyyaml hjson einops msgpack psutil peft"
REQUIRED += " accelerate"
ALL_VARIANTS = "full-packed,full-padded,lora-packed,lora-padded"
CHECK_ROWS = 8  # rows of the independent log-prob check: enough tokens, little memory
TINY_SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
TINY_SHAPE.update(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)


def check_packages() -> None:
    """Exit with a clear message when a package the roles import is missing."""
    sys.path.insert(0, str(ROOT))  # the tree that travelled, never a stale installed wheel
    names = [(n.split(":")[0], n.split(":")[-1]) for n in REQUIRED.split()]
    missing = [pip for mod, pip in names if importlib.util.find_spec(mod) is None]
    if missing:
        print(
            f"gpu_inprocess: missing packages {', '.join(missing)}: build the wheels with "
            "`bash launch/gpu_wheels.sh`, carry build/gpu_wheels, and install them first "
            "(docs/benchmarks.md, 'GPU in-process check')",
            file=sys.stderr,
        )
        sys.exit(2)


def stub_ray() -> bool:
    """Put a stand-in ``ray`` in ``sys.modules`` when Ray is not installed; True if it did.

    The in-process roles only touch ``ray.ObjectRef`` (isinstance checks) and ``ray.get`` (refs,
    which never occur here), so a class nothing is an instance of and a failing ``get`` do.
    """
    if importlib.util.find_spec("ray") is not None:
        return False
    stub = types.ModuleType("ray")
    stub.ObjectRef = type("ObjectRef", (), {})  # type: ignore[attr-defined]

    def get(*_: object, **__: object) -> None:
        raise RuntimeError("ray.get called in the in-process GPU check (Ray is stubbed)")

    stub.get = get  # type: ignore[attr-defined]
    sys.modules["ray"] = stub
    return True


def ray_importers() -> list[str]:
    """The rayrlhf modules loaded now that hold ``ray`` (or a ``ray.*`` module) as a global."""

    def holds_ray(module: types.ModuleType) -> bool:
        mods = (v for v in vars(module).values() if isinstance(v, types.ModuleType))
        return any(m.__name__.split(".")[0] == "ray" for m in mods)

    loaded = list(sys.modules.items())
    return sorted(n for n, m in loaded if n.startswith("rayrlhf") and m and holds_ray(m))


def write_model(path: Path, tiny: bool, device: torch.device) -> Path:
    """A random Llama of Llama-3.2-1B's shape (or a tiny one) and the word-level tokenizer,
    saved in bf16 (the learner reads fp32 from it; the rollout and reference bf16)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rayrlhf.planner.shapes import PRESETS
    from rayrlhf.tiny_models import build_tokenizer

    # Tiny: a vocabulary wider than the tokenizer's 33 words, as the 1B model's is, so sampled
    # ids the tokenizer cannot decode take the same path.
    config = LlamaConfig(**TINY_SHAPE) if tiny else PRESETS["llama-1b"]()
    config.bos_token_id = config.eos_token_id = config.pad_token_id = 0
    config.max_position_embeddings = 4096
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1.2B weights is seconds on a GPU, minutes on CPU
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def make_prompts(prompts: int, max_tokens: int, seed: int) -> list[str]:
    """Seeded prompts of the tokenizer's words (one token each), lengths in [max/4, max]."""
    from rayrlhf.tiny_models import WORDS

    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(max_tokens // 4, 1), max_tokens + 1, (prompts,), generator=gen)
    return [
        " ".join(WORDS[int(i)] for i in torch.randint(2, len(WORDS), (int(n),), generator=gen))
        for n in lengths
    ]


def overrides(args: argparse.Namespace, model: Path, prompts: Path, lora: bool, packed: bool):
    """The dotted config overrides of one variant (one section a line; paths have no spaces)."""
    a, pack, per_step = args, str(packed).lower(), args.rows // args.group_size
    return (
        f"model.policy={model} data.prompts={prompts} algorithm.name={a.algorithm} "
        # Required, unused: the benchmark makes its own scores.
        "reward.function=rayrlhf.rewards.rules:target_word_frequency "
        f"rollout.group_size={a.group_size} rollout.prompts_per_step={per_step} "
        f"rollout.chunk_size={per_step} rollout.max_prompt_tokens={a.prompt_tokens} "
        f"rollout.max_new_tokens={a.new_tokens} learner.device={a.device} "
        f"learner.num_gpus={int(a.device == 'cuda')} learner.precision={a.precision} "
        f"learner.packing={pack} learner.minibatch_size={a.rows} "
        f"learner.micro_batch_size={min(a.rows, 8)} learner.peak_tflops={a.peak_tflops} "
        f"learner.max_tokens_per_micro_batch={a.micro_tokens} reference.packing={pack} "
        f"reference.max_tokens_per_micro_batch={a.micro_tokens} online.kl_coef={a.kl_coef} "
        + (f"model.lora.rank={a.lora_rank}" if lora else "")
    ).split()


def cut_lengths(rollout: Rollout, new_tokens: int, seed: int) -> Rollout:
    """The rollout with each response cut to a seeded 25-100 % of ``new_tokens`` (B, R)."""
    gen = torch.Generator().manual_seed(seed)
    rows, width = rollout.response_mask.shape
    keep = torch.randint(max(new_tokens // 4, 1), new_tokens + 1, (rows,), generator=gen)
    mask = rollout.response_mask * (torch.arange(width)[None] < keep[:, None]).long()
    ids, logprobs = rollout.response_ids * mask, rollout.logprobs * mask  # pad id 0 off the mask
    return dataclasses.replace(rollout, response_ids=ids, response_mask=mask, logprobs=logprobs)


@torch.no_grad()
def logprob_gap(learner: Learner, rollout: Rollout, packed: bool, rows: int) -> dict[str, float]:
    """Max and mean |rollout − learner| log-prob over the response tokens of the first ``rows``
    rows, the learner's forward at the sampling temperature (before it trains on them)."""
    from rayrlhf.forward import response_logprobs

    n = min(rows, len(rollout.sample_ids))
    ids = rollout.input_ids[:n].to(learner.device)
    am = rollout.attention_mask[:n].to(learner.device)
    lp, _ = response_logprobs(
        learner.policy, ids, am, rollout.prompt_ids.shape[1], learner.s.temperature, packed=packed
    )
    mask = rollout.response_mask[:n].bool()
    gap = (lp.float().cpu() - rollout.logprobs[:n])[mask].abs()
    return {"max": float(gap.max()), "mean": float(gap.mean()), "tokens": int(mask.sum())}


def flop_counter(learner: Learner) -> tuple[FlopCounter, float]:
    """A FLOP counter built from the base model's shapes on the meta device, and the trainable
    share of the policy's weights (LoRA's backward costs 1 + that share forwards, not 2: the
    frozen weights get no gradient). Independent of the learner's own ``perf/*`` count."""
    from transformers import AutoModel, AutoModelForCausalLM

    from rayrlhf.perf import FlopCounter

    hf_config = learner.policy.module.config
    with torch.device("meta"):
        policy = AutoModelForCausalLM.from_config(hf_config)
        value = AutoModel.from_config(hf_config) if learner.value is not None else None
    params = list(learner.policy.module.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad) / sum(p.numel() for p in params)
    return FlopCounter(policy, value), trainable


def run_variant(name: str, args: argparse.Namespace, paths: dict, shared: dict) -> dict[str, Any]:
    """Build the learner and rollout worker of variant ``name`` and run ``args.steps`` steps."""
    from rayrlhf.config import load
    from rayrlhf.experience import PromptChunk, Scores
    from rayrlhf.roles.learner import Learner
    from rayrlhf.roles.reference import ReferenceWorker
    from rayrlhf.roles.rollout import RolloutWorker

    lora, packed = name.startswith("lora"), name.endswith("-packed")
    cfg = load(None, overrides(args, paths["model"], paths["prompts_file"], lora, packed))
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    learner = Learner(cfg, 0)
    # One rank in this process: loopback, not the host name's address (a sandboxed GPU host
    # may resolve its name to an address nothing listens on, and the group would wait).
    learner.setup("127.0.0.1", learner.rendezvous_address()[1])
    worker = RolloutWorker(cfg)
    if cfg.uses_reference and "reference" not in shared:
        shared["reference"] = ReferenceWorker(cfg)  # the frozen base: one for every variant
    setup_s = time.perf_counter() - t0
    counter, trainable = flop_counter(learner)
    peak = learner.peak_tflops
    epochs = cfg.learner.ppo_epochs
    g, prompts = args.group_size, paths["prompts"]
    steps: list[dict[str, Any]] = []
    for step in range(args.steps):
        ids = [f"{step}-{i}.{j}" for i in range(len(prompts)) for j in range(g)]
        chunk = PromptChunk(ids, [p for p in prompts for _ in range(g)], group_size=g)
        t = time.perf_counter()
        flat = learner.policy_state_dict()  # gathered to host memory in the rollout dtype
        gather_s = time.perf_counter() - t
        worker.load_weights(flat, learner.policy_version)
        rollout = worker.generate(chunk)
        generated = int(rollout.response_mask.sum())
        rollout = cut_lengths(rollout, args.new_tokens, seed=step)
        gap = logprob_gap(learner, rollout, packed, CHECK_ROWS)
        ref = shared["reference"].logprobs(rollout) if cfg.uses_reference else None
        gen = torch.Generator().manual_seed(step)
        scores = Scores(list(ids), torch.randn(len(ids), generator=gen))
        m = learner.train_step([rollout], [scores], [ref])
        flops = counter.train_flops(
            rollout.attention_mask.sum(-1), int(rollout.response_mask.sum()), epochs, trainable
        )
        steps.append(
            {
                "sync_bytes": flat.nbytes,
                "sync_gather_s": gather_s,
                "sync_load_s": worker.load_seconds,
                "generate_s": rollout.generate_seconds,
                "generate_tokens_per_s": generated / max(rollout.generate_seconds, 1e-9),
                "reference_s": ref.seconds if ref is not None else 0.0,
                "train_s": m["time/train"],
                "train_tokens_per_s": m["perf/train_tokens_per_s"],
                "learner_tflops": m["perf/train_tflops"],
                "learner_mfu": m["perf/mfu"],
                "bench_tflops": flops / max(m["time/train"], 1e-9) / 1e12,
                "padding_fraction": m["perf/padding_fraction"],
                "logprob_mismatch": m.get("rollout/logprob_mismatch"),
                "check_gap_max": gap["max"],
                "check_gap_mean": gap["mean"],
            }
        )
    timed = steps[1:] or steps  # the first step warms kernels and allocators up
    out: dict[str, Any] = {"variant": name, "setup_s": round(setup_s, 2), "steps": len(steps)}
    for key in steps[0]:
        values = [s[key] for s in timed if s[key] is not None]
        out[key] = round(statistics.median(values), 6) if values else None
    out["check_gap_max"] = max(s["check_gap_max"] for s in steps)  # the worst, not the median
    out["trainable_share"] = round(trainable, 5)
    out["bench_mfu"] = round(out["bench_tflops"] / peak, 4)  # the learner's peak: set or probed
    out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    del learner, worker
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def summarize(results: list[dict[str, Any]], env: dict[str, Any]) -> dict[str, Any]:
    """The final line: the environment and each variant's headline numbers side by side."""
    done = {r["variant"]: r for r in results if "train_s" in r}
    keys = ("train_s", "train_tokens_per_s", "bench_tflops", "bench_mfu", "learner_mfu")
    out: dict[str, Any] = {"summary": True, **env}
    out["variants"] = {k: {f: v.get(f) for f in keys} for k, v in done.items()}
    for kind in ("full", "lora"):  # weight sync: the whole policy against the adapters
        r = next((r for k, r in done.items() if k.startswith(kind)), None)
        if r is not None:
            out[f"sync_{kind}"] = {k: r[f"sync_{k}"] for k in ("bytes", "gather_s", "load_s")}
            out.setdefault("generate_tokens_per_s", r["generate_tokens_per_s"])
    if done:
        out["worst_logprob_gap_max"] = max(r["check_gap_max"] for r in done.values())
        out["worst_logprob_mismatch"] = max(r["logprob_mismatch"] or 0.0 for r in done.values())
    out["errors"] = {r["variant"]: r["error"] for r in results if "error" in r}
    out["skipped"] = {r["variant"]: r["skipped"] for r in results if "skipped" in r}
    return out


def parse_args() -> argparse.Namespace:
    """Command-line options; ``--tiny`` changes the shape defaults to a short CPU run."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="a tiny Llama and small rows")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--algorithm", default="grpo", choices=["grpo", "ppo", "rloo"])
    p.add_argument("--rows", type=int, default=None, help="rows per step (64; tiny 8)")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=None, help="longest prompt (512; tiny 32)")
    p.add_argument("--new-tokens", type=int, default=None, help="max new tokens (256; tiny 16)")
    p.add_argument("--micro-tokens", type=int, default=None, help="tokens/micro-batch (16384)")
    p.add_argument("--steps", type=int, default=None, help="steps per variant (3; tiny 2)")
    p.add_argument("--variants", default=ALL_VARIANTS)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak (H200: 790)")
    p.add_argument("--budget-s", type=float, default=480.0, help="skip variants after this")
    p.add_argument("--out", default=None, help="also write the summary JSON here")
    args = p.parse_args()
    tiny = {"rows": 8, "prompt_tokens": 32, "new_tokens": 16, "micro_tokens": 256, "steps": 2}
    full = {"rows": 64, "prompt_tokens": 512, "new_tokens": 256, "micro_tokens": 16384, "steps": 3}
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.peak_tflops is None:  # 0 makes the learner probe (a CPU has no published peak)
        args.peak_tflops = 790.0 if args.device == "cuda" else 0.0
    if args.rows % args.group_size:
        p.error(f"--rows ({args.rows}) must be a multiple of --group-size ({args.group_size})")
    return args


def main() -> None:
    args = parse_args()
    check_packages()
    stubbed = stub_ray()
    import transformers

    import rayrlhf.roles.learner  # noqa: F401  (imported here to see what pulls Ray in)
    import rayrlhf.roles.reference  # noqa: F401
    import rayrlhf.roles.rollout  # noqa: F401
    from rayrlhf.models import DTYPES
    from rayrlhf.perf import probe_peak_tflops

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_inprocess: --device cuda but torch sees no GPU", file=sys.stderr)
        sys.exit(2)
    device = torch.device(args.device)
    torch.set_num_threads(2 if args.device == "cpu" else torch.get_num_threads())
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "ray_stubbed": stubbed,
        "ray_imported_at_module_level_by": ray_importers(),
        "model": "tiny-llama" if args.tiny else "llama-1b (random weights)",
        "shape": {k: getattr(args, k) for k in ("rows", "prompt_tokens", "new_tokens", "steps")},
        "peak_tflops": args.peak_tflops,
        "probe_tflops": round(probe_peak_tflops(device, DTYPES[args.precision]), 2),
    }
    print(json.dumps({"env": env}), flush=True)
    start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    t = time.perf_counter()
    model = write_model(Path(tmp.name) / "model", args.tiny, device)
    env["model_write_s"] = round(time.perf_counter() - t, 2)
    prompts = make_prompts(args.rows // args.group_size, args.prompt_tokens, seed=0)
    prompts_file = Path(tmp.name) / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    paths = {"model": model, "prompts_file": prompts_file, "prompts": prompts}
    results: list[dict[str, Any]] = []
    shared: dict[str, Any] = {}
    for name in args.variants.split(","):
        if name not in ALL_VARIANTS.split(","):
            result: dict[str, Any] = {"variant": name, "error": f"unknown variant {name!r}"}
        elif time.perf_counter() - start > args.budget_s:
            result = {"variant": name, "skipped": f"time budget {args.budget_s:.0f} s spent"}
        else:
            try:
                result = run_variant(name, args, paths, shared)
            except Exception as err:  # report and go on: the other variants still tell a lot
                traceback.print_exc()
                result = {"variant": name, "error": f"{type(err).__name__}: {err}"[:500]}
        results.append(result)
        print(json.dumps(result), flush=True)
    env["total_s"] = round(time.perf_counter() - start, 1)
    summary = summarize(results, env)
    print(json.dumps(summary), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "summary": summary}, indent=1))
    shared.clear()
    tmp.cleanup()
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()
