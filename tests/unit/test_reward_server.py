"""`rayrlhf serve-reward` exposed safely: a real server process on loopback with a token, limits
answered fast, and one-line start-up errors (exit 2) before anything is served."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rayrlhf.rewards.http import HttpScorer
from rayrlhf.rewards.server import TOKEN_ENV, main
from rayrlhf.rewards.validation import RewardError
from rayrlhf.tiny_models import save_tiny, save_tiny_reward_model

TOKEN = "t0ken-for-tests-only"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A running server: its URL, folders and the files its stdout/stderr go to."""

    def __init__(self, url: str, model: Path, out: Path, err: Path) -> None:
        self.url, self.model, self.out, self.err = url, model, out, err

    def post(self, data: bytes, token: str | None = TOKEN) -> tuple[int, dict, float]:
        """(status, JSON reply, seconds) of one POST /score."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{self.url}/score", data=data, headers=headers)
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                status, body = reply.status, reply.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        return status, json.loads(body), time.monotonic() - start


def _body(prompts: list[str], responses: list[str]) -> bytes:
    ids = [str(i) for i in range(len(prompts))]
    return json.dumps({"sample_ids": ids, "prompts": prompts, "responses": responses}).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real `serve-reward` process for a tiny reward model, with a token file."""
    root = tmp_path_factory.mktemp("serve")
    model = save_tiny_reward_model(root / "reward_model" / "model")
    (root / "token").write_text(TOKEN + "\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    out, err = root / "stdout", root / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rayrlhf.rewards.server", str(model), "--port", str(port)]
            + ["--token-file", str(root / "token"), "--threads", "1"],
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"serve-reward did not start: {err.read_text()}")
                time.sleep(0.1)
        yield Served(url, model, out, err)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_an_authorised_request_is_scored(served: Served) -> None:
    scorer = HttpScorer(f"{served.url}/score", batch_size=8, timeout_s=10, retries=0, token=TOKEN)
    scores = scorer.score(["a", "b"], ["the movie", "a film"], ["good", "bad"])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


def test_an_unauthorised_request_gets_401(served: Served) -> None:
    body = _body(["the movie"], ["good"])
    for token in (None, "wrong", TOKEN + "x"):
        status, reply, _ = served.post(body, token)
        assert status == 401 and reply == {"error": "missing or wrong bearer token"}
    no_token = HttpScorer(f"{served.url}/score", 8, timeout_s=10, retries=3, sleep=lambda s: 0)
    with pytest.raises(RewardError, match="HTTP 401"):  # a 4xx is not retried
        no_token.score(["a"], ["the movie"], ["good"])
    assert no_token.requests == 1


def test_oversized_requests_get_413_within_a_second(served: Served) -> None:
    cases = [
        _body(["good " * 200_000], ["x"]),  # one 1-million-character prompt
        _body(["a"] * 1025, ["b"] * 1025),  # over --max-items
        b"x" * 64 * 2**20,  # 64 MiB of body: refused by its size before it is parsed
    ]
    for data in cases:
        status, reply, seconds = served.post(data)
        assert status == 413 and seconds < 1.0, (status, reply, seconds)
    status, _, _ = served.post(_body(["the movie"], ["good"]))
    assert status == 200  # and the server is still serving


def test_a_lone_surrogate_gets_400(served: Served) -> None:
    raw = b'{"sample_ids":["a"],"prompts":["\\ud800"],"responses":["x"]}'
    status, reply, _ = served.post(raw)
    assert status == 400 and "surrogate" in reply["error"]
    assert served.post(b"\xff{not json", TOKEN)[0] == 400


def test_health_names_no_absolute_path(served: Served) -> None:
    with urllib.request.urlopen(f"{served.url}/health", timeout=5) as reply:
        text = reply.read().decode()
    assert json.loads(text)["model"] == "model" and str(served.model.parent) not in text


def test_one_access_log_line_per_request_without_token_or_text(served: Served) -> None:
    served.post(_body(["secret prompt words"], ["good"]))
    served.post(_body(["the movie"], ["good"]), token=None)
    time.sleep(0.2)  # the server writes its line after the reply
    log = served.err.read_text()
    assert "POST /score 200 items=1" in log and "POST /score 401 items=0" in log
    everything = log + served.out.read_text()
    assert TOKEN not in everything and "secret prompt" not in everything


# In-process start-up checks: main() returns (or argparse exits) 2 before loading or serving.


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    return err


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--threads", "-1")])
def test_counts_below_one_are_refused(tmp_path, capsys, flag, value) -> None:
    err = _fails(capsys, [str(tmp_path), flag, value])
    assert err.count("\n") == 1 and flag in err and "at least 1" in err


def test_a_missing_folder_is_named(tmp_path, capsys) -> None:
    err = _fails(capsys, [str(tmp_path / "nope")])
    assert f"model folder {tmp_path / 'nope'} does not exist" in err and "Hub" not in err


def test_a_port_in_use_is_named(tmp_path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _fails(capsys, [str(tmp_path), "--port", str(port)])
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path, capsys) -> None:
    err = _fails(capsys, [str(tmp_path), "--device", "cuda"])
    assert "--device cuda" in err and "CUDA" in err and err.count("\n") == 1


def test_an_exposed_host_without_token_warns(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with socket.socket() as taken:  # the port is taken so that nothing is served
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        err = _fails(capsys, [str(tmp_path), "--host", "0.0.0.0", "--port", port])
        assert "warning: serving on 0.0.0.0 without a token" in err
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        err = _fails(capsys, [str(tmp_path), "--host", "0.0.0.0", "--port", port])
        assert "warning" not in err and TOKEN not in err


def test_an_empty_token_file_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "token").write_text("\n")
    err = _fails(capsys, [str(tmp_path), "--token-file", str(tmp_path / "token")])
    assert "token file" in err and "is empty" in err


def test_a_policy_folder_is_refused_before_serving(tmp_path, capsys) -> None:
    policy = save_tiny(tmp_path / "sft" / "model")
    err = _fails(capsys, [str(policy), "--port", str(_free_port())])
    last = err.strip().splitlines()[-1]  # transformers may log its load report above it
    assert f"cannot load reward model {policy}" in last and "not a trained reward model" in last
