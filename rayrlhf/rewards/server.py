"""``rayrlhf serve-reward MODEL_DIR``: a trained reward model behind HTTP (aiohttp's server).

A pipeline's reward model can then score on machines of its own: point ``reward.url`` at it.
aiohttp comes with ``ray[default]`` (its dashboard runs on it), so serving adds no dependency.

    POST /score   {"sample_ids": [...], "prompts": [...], "responses": [...]}
                  → {"sample_ids": [...], "scores": [...]}
    GET  /health  → {"status": "ok", "model": BASE_NAME, "max_items": N, "max_chars": N}

Requests are scored one at a time in a worker thread (the model is not re-entrant), with the
same scorer class as an in-process reward worker, so the scores are the same numbers.

Exposing it: with a token (``--token-file`` or ``$RAYRLHF_REWARD_TOKEN``) ``/score`` wants
``Authorization: Bearer TOKEN`` (401 otherwise). Because requests queue behind one another, each
is bounded before any tokenising: at most ``--max-items`` samples, ``--max-chars`` characters per
prompt or response and ``--max-body-mb`` of body (413 beyond). ``/health`` stays open but names
only the folder's base name. One access-log line per request goes to stderr, without token or text.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from aiohttp import web

from rayrlhf.rewards.http import read_token

TOKEN_ENV = "RAYRLHF_REWARD_TOKEN"
PROG = "rayrlhf serve-reward"
log = logging.getLogger("rayrlhf.serve_reward")

Scorer = Callable[[list[str], list[str]], list[float]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Samples in a request, for its access-log line (a typed key where aiohttp has them, >= 3.12).
ITEMS: Any = web.RequestKey("items", int) if hasattr(web, "RequestKey") else "rayrlhf_items"


class TooLarge(ValueError):
    """A request over one of the server's limits: answered 413, the client should send less."""


def _check(body: Any, max_items: int, max_chars: int) -> tuple[list[str], list[str], list[str]]:
    """The request's three lists, or ValueError (TooLarge for a limit) saying what is wrong."""
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
    if len(lists[0]) > max_items:
        raise TooLarge(
            f"{len(lists[0])} items; this server scores at most {max_items} per request "
            "(--max-items): send fewer (reward.batch_size)"
        )
    for key, values in zip(("sample_ids", "prompts", "responses"), lists, strict=True):
        for i, text in enumerate(values):
            if len(text) > max_chars:
                raise TooLarge(f"{key}[{i}] has {len(text)} characters; at most {max_chars}")
            try:  # JSON's \ud800 escapes parse to lone surrogates that no tokenizer can take
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{key}[{i}] is not valid Unicode (a lone surrogate)") from None
    return lists[0], lists[1], lists[2]


def _authorised(request: web.Request, token: bytes) -> bool:
    """Whether the request carries ``Authorization: Bearer`` with ``token``."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time, so the reply's timing does not reveal how much of a guess was right.
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)


def _printable(text: str, limit: int = 200) -> str:
    """``text`` cut and escaped so a crafted path cannot forge log lines."""
    return ascii(text[:limit])[1:-1]


def make_app(
    scorer: Scorer,
    model_dir: str,
    *,
    token: str | None = None,
    max_items: int = 1024,
    max_chars: int = 20000,
    max_body: int = 16 * 2**20,
) -> web.Application:
    """The aiohttp application serving ``scorer``; ``token`` set: ``/score`` needs it."""
    lock = asyncio.Lock()
    secret = None if token is None else token.encode()

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"error": message}, status=status, headers=headers)

    async def score(request: web.Request) -> web.Response:
        # Cheapest refusals first: no body is read for a wrong token or a declared huge body.
        if secret is not None and not _authorised(request, secret):
            return error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        too_big = f"request body over {max_body} bytes (--max-body-mb): send fewer samples"
        if (request.content_length or 0) > max_body:
            return error(413, too_big)
        try:
            raw = await request.read()  # stops at client_max_size (chunked bodies included)
        except web.HTTPRequestEntityTooLarge:
            return error(413, too_big)
        try:
            ids, prompts, responses = _check(json.loads(raw), max_items, max_chars)
        except TooLarge as err:
            return error(413, str(err))
        except (ValueError, RecursionError) as err:  # malformed JSON or UTF-8, deep nesting
            return error(400, str(err) or err.__class__.__name__)
        request[ITEMS] = len(ids)
        async with lock:
            scores = await asyncio.to_thread(scorer, prompts, responses)
        return web.json_response({"sample_ids": ids, "scores": scores})

    async def health(request: web.Request) -> web.Response:
        # Open to all (load balancers probe it): the base name only, no path of this machine.
        name = os.path.basename(os.path.normpath(model_dir))
        return web.json_response(
            {"status": "ok", "model": name, "max_items": max_items, "max_chars": max_chars}
        )

    @web.middleware
    async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
        start, status = time.perf_counter(), 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as err:  # 404, 405, ... raised by the router
            status = err.status
            raise
        finally:  # method, path, status, items, seconds: never a header or a text
            log.info(
                "%s %s %d items=%d %.3fs",
                request.method,
                _printable(request.path),
                status,
                request.get(ITEMS, 0),
                time.perf_counter() - start,
            )

    # client_max_size: a larger body is refused while it is read, before it fills memory.
    app = web.Application(client_max_size=max_body, middlewares=[access_log])
    app.add_routes([web.post("/score", score), web.get("/health", health)])
    return app


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    """argparse type: a TCP port (0: any free one, printed at start)."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block: the mistake is the line to read."""
        self.exit(2, f"{PROG}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="serve a reward model over HTTP")
    parser.add_argument(
        "model_dir", help="HF sequence-classification folder (a pipeline's reward_model/model)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=_port, default=8000)
    parser.add_argument("--batch-size", type=_positive, default=32, help="pairs per model forward")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="torch CPU threads; 1 gives the bit-identical scores of a Ray reward worker with "
        "num_cpus 1 (the thread count changes the order of float sums)",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        help=f"file holding a bearer token that /score requires (default: ${TOKEN_ENV} if set)",
    )
    parser.add_argument(
        "--max-items", type=_positive, default=1024, help="samples per request (413 beyond)"
    )
    parser.add_argument(
        "--max-chars",
        type=_positive,
        default=20000,
        help="characters per prompt or response (413 beyond)",
    )
    parser.add_argument(
        "--max-body-mb", type=_positive, default=16, help="MiB per request body (413 beyond)"
    )
    return parser


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, bound before the model loads so a taken port fails
    in a second, not after minutes of loading (and no other process can take it meanwhile)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    # IPv4 first: "localhost" may list ::1 first while clients dial 127.0.0.1.
    family, _, _, _, address = sorted(infos, key=lambda i: i[0] != socket.AF_INET)[0]
    return socket.create_server(address, family=family, backlog=128)


def _check_device(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        return f"--device {device}: not a torch device (cpu or cuda)"
    if kind == "cuda" and not torch.cuda.is_available():
        if not torch.backends.cuda.is_built():
            return f"--device {device}: this torch ({torch.__version__}) is built without CUDA"
        return f"--device {device}: no CUDA device is visible"
    return None


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; 2, after one line on stderr, when it cannot start."""
    args = _parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"{PROG}: {message}", file=sys.stderr)
        return 2

    if not os.path.exists(args.model_dir):
        return fail(f"model folder {args.model_dir} does not exist")
    if not os.path.isdir(args.model_dir):
        return fail(f"{args.model_dir} is not a folder (want a reward model's HF folder)")
    env = TOKEN_ENV if TOKEN_ENV in os.environ else None
    try:  # the file wins over the variable; an empty or unreadable one is an error
        token = read_token(args.token_file, None if args.token_file else env)
    except ValueError as err:
        return fail(str(err))
    problem = _check_device(args.device)
    if problem:
        return fail(problem)
    if token is None and not _is_loopback(args.host):
        print(
            f"{PROG}: warning: serving on {args.host} without a token: anyone who can reach "
            f"it can use it (set --token-file or ${TOKEN_ENV})",
            file=sys.stderr,
        )
    try:
        sock = _listen(args.host, args.port)
    except OSError as err:
        return fail(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from rayrlhf.rewards.model_scorer import ModelScorer  # torch and transformers: slow

    try:
        scorer = ModelScorer(args.model_dir, args.batch_size, args.device)
    except (OSError, ValueError, RuntimeError) as err:  # RewardModelError is a ValueError
        sock.close()
        detail = " ".join(str(err).split())  # transformers' messages span lines
        return fail(f"cannot load reward model {args.model_dir}: {detail}")
    app = make_app(
        scorer,
        args.model_dir,
        token=token,
        max_items=args.max_items,
        max_chars=args.max_chars,
        max_body=args.max_body_mb * 2**20,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    port = sock.getsockname()[1]  # the real one when --port 0
    auth = "token required" if token else "no token"
    print(f"serving {args.model_dir} on http://{args.host}:{port}/score ({auth})", flush=True)
    # access_log=None: ours above is the one line per request, aiohttp's would add another.
    web.run_app(app, sock=sock, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    from rayrlhf.log_setup import quiet_libraries

    quiet_libraries()
    sys.exit(main())
