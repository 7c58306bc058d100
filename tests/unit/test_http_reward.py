"""The HTTP reward client against the real server code (aiohttp) on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import torch
from aiohttp import web

from rayrlhf.experience import Rollout
from rayrlhf.rewards.http import HttpScorer
from rayrlhf.rewards.server import make_app
from rayrlhf.rewards.validation import RewardError


class FakeModel:
    """Scores len(response); ``script`` rewrites the reply of the n-th request (1-based)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        self.calls += 1
        return [float(len(r)) for r in responses]


def _serve(app: web.Application) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def server() -> Iterator[tuple[str, FakeModel, list]]:
    """The real app behind a middleware that can fail or corrupt chosen requests."""
    model, faults = FakeModel(), []

    @web.middleware
    async def inject(request, handler):
        if faults:
            fault = faults.pop(0)
            if fault == "503":
                await handler(request)  # scored, then the reply is lost: a retry must not count
                return web.Response(status=503, text="busy")
            if fault == "slow":
                await asyncio.sleep(1.5)
            if fault == "other-ids":
                return web.json_response({"sample_ids": ["x"], "scores": [1.0]})
            if fault == "nan":
                body = await request.json()
                return web.json_response(
                    {"sample_ids": body["sample_ids"], "scores": [float("nan")] * 2}
                )
        return await handler(request)

    app = make_app(model, "fake")
    app.middlewares.append(inject)
    for url in _serve(app):
        yield url + "/score", model, faults


def test_batches_retries_and_exactly_one_score_per_sample(server) -> None:
    url, model, faults = server
    scorer = HttpScorer(url, batch_size=2, timeout_s=5, retries=2, sleep=lambda s: None)
    faults.append("503")
    ids, prompts, responses = ["a", "b", "c"], ["p"] * 3, ["x", "yy", "zzz"]
    assert scorer.score(ids, prompts, responses) == [1.0, 2.0, 3.0]
    assert scorer.requests == 3 and model.calls == 3  # 2 batches, the first one twice


def test_timeouts_are_retried_then_reported_with_the_endpoint(server) -> None:
    url, _, faults = server
    scorer = HttpScorer(url, batch_size=8, timeout_s=0.5, retries=1, sleep=lambda s: None)
    faults.extend(["slow", "slow"])
    with pytest.raises(
        RewardError, match=r"reward endpoint http://127.0.0.1:\d+/score .*'s0'.* 2 attempts"
    ):
        scorer.score(["s0", "s1"], ["p", "p"], ["a", "b"])


@pytest.mark.parametrize(
    ("fault", "message"),
    [("other-ids", "other samples"), ("nan", "non-finite score nan for sample 's0'")],
)
def test_bad_replies_are_refused_naming_endpoint_and_sample(server, fault, message) -> None:
    url, _, faults = server
    faults.append(fault)
    scorer = HttpScorer(url, batch_size=8, timeout_s=5, retries=0)
    with pytest.raises(RewardError, match=message) as err:
        scorer.score(["s0", "s1"], ["p", "p"], ["a", "b"])
    assert url in str(err.value)


def test_the_server_rejects_malformed_requests(server) -> None:
    import json
    import urllib.error
    import urllib.request

    url, _, _ = server
    body = json.dumps({"sample_ids": ["a"], "prompts": ["p"], "responses": [3]}).encode()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=5)
    assert (
        err.value.code == 400
        and "'responses' must be a list of strings" in err.value.read().decode()
    )
    scorer = HttpScorer(url, batch_size=8, timeout_s=5, retries=3, sleep=lambda s: None)
    with pytest.raises(RewardError, match="HTTP 400"):  # a 4xx is not retried
        scorer._batch(["a"], ["p"], [3])  # type: ignore[list-item]


def test_reward_worker_scores_through_the_endpoint(server) -> None:
    from rayrlhf.config import RewardConfig
    from rayrlhf.roles.reward import RewardWorker

    url, _, _ = server
    worker = RewardWorker(RewardConfig(url=url, batch_size=2))
    rollout = Rollout(
        sample_ids=["0-0", "0-1"],
        policy_version=0,
        prompt_ids=torch.ones(2, 1, dtype=torch.long),
        prompt_mask=torch.ones(2, 1, dtype=torch.long),
        response_ids=torch.ones(2, 1, dtype=torch.long),
        response_mask=torch.ones(2, 1, dtype=torch.long),
        logprobs=torch.zeros(2, 1),
        prompts=["p", "q"],
        responses=["good", "no"],
    )
    assert worker.score(rollout).rewards.tolist() == [4.0, 2.0]


def test_the_client_sends_the_token_of_reward_url_token_file_or_env(tmp_path, monkeypatch) -> None:
    from rayrlhf.config import RewardConfig

    (tmp_path / "token").write_text("s3cret\n")
    monkeypatch.setenv("REWARD_TOKEN", "s3cret")
    for base in _serve(make_app(FakeModel(), "fake", token="s3cret")):
        url = base + "/score"
        for where in (
            {"url_token_file": str(tmp_path / "token")},
            {"url_token_env": "REWARD_TOKEN"},
        ):
            scorer = HttpScorer.from_config(RewardConfig(url=url, **where))
            assert scorer.score(["a"], ["p"], ["xy"]) == [2.0]
        with pytest.raises(RewardError, match="HTTP 401"):
            HttpScorer(url, batch_size=8, timeout_s=5, retries=0).score(["a"], ["p"], ["x"])
        monkeypatch.delenv("REWARD_TOKEN")
        with pytest.raises(RewardError, match="REWARD_TOKEN .* is not set"):
            HttpScorer.from_config(RewardConfig(url=url, url_token_env="REWARD_TOKEN"))


def test_token_options_need_reward_url_and_hold_no_token() -> None:
    from rayrlhf.config import RewardConfig

    with pytest.raises(ValueError, match="need reward.url"):
        RewardConfig(function="m:f", url_token_env="REWARD_TOKEN")
    with pytest.raises(ValueError, match="not both"):
        RewardConfig(url="http://h/score", url_token_env="T", url_token_file="/t")
    config = RewardConfig(url="http://h/score", url_token_file="/run/secrets/token")
    assert config.model_dump()["url_token_file"] == "/run/secrets/token"  # a path, not a secret
