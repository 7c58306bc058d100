"""Generation backends side by side: Hugging Face ``generate`` vs vLLM, samples/s and tokens/s.

    .venv/bin/python benchmarks/rollout_backends.py [--prompts 64] [--new-tokens 24] [--repeats 3]

Needs ``bash launch/setup.sh --vllm`` (and ``--demo`` for SmolLM2-135M-Instruct; without it only
the tiny model runs). For each model, the same prompts, length limit and temperature go through
a real :class:`~rayrlhf.roles.rollout.RolloutWorker` with ``rollout.backend=hf`` and then
``vllm``, each in a fresh process (vLLM binds its threads for good), one chunk of all prompts
per call, after one warm-up call. Reported per backend: samples/s and generated tokens/s (the
median of ``--repeats`` calls; lengths differ a little, since the two sample differently), the
worker's start-up (for vLLM: the engine's, which profiles memory and allocates the KV cache),
and for vLLM the in-place load of a full set of new weights.

The tiny model is the tests' GPT-2 with one head of 64 (vLLM's CPU kernels take no head size
under 32). Stdout: a table, then one JSON line. It never fails on a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY_PROMPTS = ["the movie was very", "a film is", "the plot", "this story was", "the actor is"]


def _prompts(model: str, n: int) -> list[str]:
    from rayrlhf.assets import cache_dir

    demo = cache_dir() / "data" / "reviews" / "prompts_train.jsonl"
    if model != "tiny" and demo.exists():
        rows = [json.loads(line)["prompt"] for line in demo.read_text().splitlines()[:n]]
        return (rows * (n // len(rows) + 1))[:n]
    return [TINY_PROMPTS[i % len(TINY_PROMPTS)] for i in range(n)]


def one(backend: str, model: str, args: argparse.Namespace) -> dict:
    """Time one backend on one model in this process."""
    import torch

    from rayrlhf.config import load
    from rayrlhf.experience import PromptChunk
    from rayrlhf.roles.rollout import RolloutWorker
    from rayrlhf.tiny_models import save_tiny
    from rayrlhf.weights.transport import flatten_params

    tmp = Path(tempfile.mkdtemp())
    path = save_tiny(tmp / "tiny", heads=1) if model == "tiny" else Path(model)
    prompts_file = tmp / "p.jsonl"
    prompts_file.write_text(json.dumps({"prompt": "x"}) + "\n")
    cfg = load(
        None,
        [
            f"model.policy={path}",
            f"data.prompts={prompts_file}",
            "reward.function=rayrlhf.rewards.rules:brevity",
            f"rollout.backend={backend}",
            f"rollout.max_new_tokens={args.new_tokens}",
            "rollout.max_prompt_tokens=32",
            "rollout.template=plain",
            "rollout.temperature=0.7",
        ],
    )
    start = time.perf_counter()
    worker = RolloutWorker(cfg)
    startup = time.perf_counter() - start
    texts = _prompts(model, args.prompts)
    worker.generate(PromptChunk([f"w-{i}" for i in range(8)], texts[:8]))  # warm-up
    rates, token_rates = [], []
    for rep in range(args.repeats):
        chunk = PromptChunk([f"{rep}-{i}" for i in range(len(texts))], texts)
        t = time.perf_counter()
        out = worker.generate(chunk)
        dt = time.perf_counter() - t
        rates.append(len(texts) / dt)
        token_rates.append(float(out.response_mask.sum()) / dt)
    row = {
        "backend": backend,
        "model": "tiny" if model == "tiny" else Path(model).name,
        "samples_per_s": statistics.median(rates),
        "tokens_per_s": statistics.median(token_rates),
        "startup_s": startup,
    }
    if backend == "vllm":
        from rayrlhf.models import load_policy

        hf = load_policy(str(path))
        named = list(hf.named_parameters())
        flat = flatten_params(named, [p.shape for _, p in named], torch.float32)
        t = time.perf_counter()
        worker.load_weights(flat, 1)
        row["weight_load_s"] = time.perf_counter() - t
        row["weights_mb"] = flat.nbytes / 2**20
        row["engine_start_s"] = worker.engine.start_seconds
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("ROW " + json.dumps(one(*args.one, args)), flush=True)
        return
    from rayrlhf.assets import cache_dir

    models = ["tiny"]
    smollm2 = cache_dir() / "models" / "smollm2-135m-instruct"
    if smollm2.exists():
        models.append(str(smollm2))
    rows = []
    for model in models:
        for backend in ("hf", "vllm"):
            cmd = [sys.executable, __file__, "--one", backend, model]
            cmd += ["--prompts", str(args.prompts), "--new-tokens", str(args.new_tokens)]
            cmd += ["--repeats", str(args.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            found = [line[4:] for line in out.stdout.splitlines() if line.startswith("ROW ")]
            if not found:
                raise SystemExit(f"{backend} on {model} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(found[0]))
            print(f"[rollout_backends] {rows[-1]}", file=sys.stderr)
    head = ("model", "backend", "samples/s", "tokens/s", "start s", "load s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (24, 7, 9, 9, 7, 6), strict=True)))
    for r in rows:
        load_s = f"{r['weight_load_s']:.3f}" if "weight_load_s" in r else "-"
        print(
            f"{r['model']:>24} {r['backend']:>7} {r['samples_per_s']:>9.2f} "
            f"{r['tokens_per_s']:>9.1f} {r['startup_s']:>7.1f} {load_s:>6}"
        )
    speedups = {}
    for model in {r["model"] for r in rows}:
        by = {r["backend"]: r for r in rows if r["model"] == model}
        speedups[model] = by["vllm"]["samples_per_s"] / by["hf"]["samples_per_s"]
    print(
        json.dumps(
            {
                "benchmark": "rollout_backends",
                "prompts": args.prompts,
                "new_tokens": args.new_tokens,
                "rows": rows,
                "vllm_speedup_samples": speedups,
            }
        )
    )


if __name__ == "__main__":
    main()
