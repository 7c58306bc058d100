"""``rayrlhf serve-reward MODEL_DIR``: a trained reward model behind HTTP (aiohttp's server).

A pipeline's reward model can then score on machines of its own: point ``reward.url`` at it.
aiohttp comes with ``ray[default]`` (its dashboard runs on it), so serving adds no dependency.

    POST /score   {"sample_ids": [...], "prompts": [...], "responses": [...]}
                  → {"sample_ids": [...], "scores": [...]}
    GET  /health  → {"status": "ok", "model": MODEL_DIR}

Requests are scored one at a time in a worker thread (the model is not re-entrant), with the
same scorer class as an in-process reward worker, so the scores are the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from aiohttp import web

from rayrlhf.rewards.model_scorer import ModelScorer


def _check(body: Any) -> tuple[list[str], list[str], list[str]]:
    """The request's three lists, or ValueError saying what is wrong with it."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    lists = []
    for key in ("sample_ids", "prompts", "responses"):
        value = body.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key!r} must be a list of strings")
        lists.append(value)
    if not len(lists[0]) == len(lists[1]) == len(lists[2]):
        raise ValueError("sample_ids, prompts and responses must have the same length")
    return lists[0], lists[1], lists[2]


def make_app(scorer: ModelScorer, model_dir: str) -> web.Application:
    """The aiohttp application serving ``scorer``."""
    lock = asyncio.Lock()

    async def score(request: web.Request) -> web.Response:
        try:
            ids, prompts, responses = _check(await request.json())
        except ValueError as err:  # includes malformed JSON
            return web.json_response({"error": str(err)}, status=400)
        async with lock:
            scores = await asyncio.to_thread(scorer, prompts, responses)
        return web.json_response({"sample_ids": ids, "scores": scores})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": model_dir})

    app = web.Application(client_max_size=64 * 2**20)
    app.add_routes([web.post("/score", score), web.get("/health", health)])
    return app


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="rayrlhf serve-reward", description="serve a reward model over HTTP"
    )
    parser.add_argument(
        "model_dir", help="HF sequence-classification folder (a pipeline's reward_model/model)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per model forward")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads; 1 gives the bit-identical scores of a Ray reward worker with "
        "num_cpus 1 (the thread count changes the order of float sums)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        scorer = ModelScorer(args.model_dir, args.batch_size, args.device)
    except (OSError, ValueError) as err:
        print(f"rayrlhf: cannot load reward model {args.model_dir}: {err}", file=sys.stderr)
        return 2
    print(f"serving {args.model_dir} on http://{args.host}:{args.port}/score", flush=True)
    web.run_app(make_app(scorer, args.model_dir), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
