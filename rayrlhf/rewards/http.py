"""A reward endpoint over HTTP: batched requests, a deadline, retries that count nothing twice.

Protocol (what ``rayrlhf serve-reward`` speaks)::

    POST URL  {"sample_ids": [...], "prompts": [...], "responses": [...]}
    200       {"sample_ids": [...], "scores": [...]}   the same ids in order, one finite float each

A batch is retried (connection refused or reset, a timeout, a 5xx answer) with backoff. Each
sample's score is taken from the first reply whose ids match its request, and kept once: a late
or repeated reply can replace nothing, and a reply that names other ids is refused. Replies are
checked like local scorers' (one finite number per sample) and errors name the endpoint and the
first sample of the batch.

An endpoint started with a token (``serve-reward --token-file``) is sent ``Authorization: Bearer``
with the token read from ``reward.url_token_file`` or ``reward.url_token_env`` where the worker
runs; the token never enters the config, a log line or an error message.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from rayrlhf.rewards.validation import RewardError, validate_scores

if TYPE_CHECKING:  # for the annotation only: the client needs no config at run time
    from rayrlhf.config import RewardConfig

RETRYABLE = (urllib.error.URLError, TimeoutError, ConnectionError)


def check_token(token: str, source: str) -> str:
    """``token`` stripped, or ValueError naming ``source`` (never the token) when unusable.

    A header value must be visible ASCII without spaces (RFC 6750's token68 is narrower still);
    refusing anything else here beats an encoding error deep inside urllib or aiohttp.
    """
    token = token.strip()
    if not token:
        raise ValueError(f"{source} is empty")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ValueError(f"{source} must hold one token of visible ASCII characters")
    return token


def read_token(file: str | None = None, env: str | None = None) -> str | None:
    """The bearer token in ``file``, else in environment variable ``env``; None if neither is set.

    ValueError (naming the file or variable, never its contents) when it cannot be read or used.
    """
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                return check_token(f.read(), f"token file {file}")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read token file {file}: {err.__class__.__name__}") from err
    if env:
        if env not in os.environ:
            raise ValueError(f"environment variable {env} (the reward endpoint token) is not set")
        return check_token(os.environ[env], f"environment variable {env}")
    return None


class HttpScorer:
    """Scores (prompt, response) pairs at ``url``, ``batch_size`` pairs per request."""

    def __init__(
        self,
        url: str,
        batch_size: int,
        timeout_s: float,
        retries: int,
        sleep: Callable[[float], None] = time.sleep,
        token: str | None = None,
    ) -> None:
        self.url, self.batch_size = url, batch_size
        self.timeout_s, self.retries, self.sleep = timeout_s, retries, sleep
        self.requests = 0  # sent, retries included (for tests and metrics)
        # Private and only ever put in a header: not in repr, errors or logs.
        self._headers = {"Content-Type": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {check_token(token, 'the reward token')}"

    @classmethod
    def from_config(cls, config: RewardConfig) -> HttpScorer:
        """The scorer for ``reward.url``, with the token of ``reward.url_token_file``/``_env``."""
        assert config.url is not None
        try:
            token = read_token(config.url_token_file, config.url_token_env)
        except ValueError as err:
            raise RewardError(f"reward endpoint {config.url}: {err}") from err
        return cls(config.url, config.batch_size, config.timeout_s, config.retries, token=token)

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.url, data=data, headers=self._headers, method="POST")
        self.requests += 1
        with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
            return json.loads(reply.read())

    def _batch(self, ids: list[str], prompts: list[str], responses: list[str]) -> list[float]:
        where = f"reward endpoint {self.url} (batch from sample {ids[0]!r})"
        body = {"sample_ids": ids, "prompts": prompts, "responses": responses}
        for attempt in range(self.retries + 1):
            try:
                reply = self._post(body)
                break
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:300]
                if err.code < 500 or attempt == self.retries:
                    raise RewardError(f"{where} answered HTTP {err.code}: {detail}") from err
            except RETRYABLE as err:
                if attempt == self.retries:
                    raise RewardError(
                        f"{where} failed after {self.retries + 1} attempts: {err}"
                    ) from err
            except json.JSONDecodeError as err:
                raise RewardError(f"{where} answered with invalid JSON: {err}") from err
            self.sleep(min(0.5 * 2**attempt, 8.0))
        if not isinstance(reply, dict) or reply.get("sample_ids") != ids:
            raise RewardError(f"{where} answered for other samples than it was asked about")
        return validate_scores(reply.get("scores"), ids, where).tolist()

    def score(self, sample_ids: list[str], prompts: list[str], responses: list[str]) -> list[float]:
        """One score per sample, in order; each sample's score is counted exactly once."""
        if len(set(sample_ids)) != len(sample_ids):
            raise RewardError(f"reward endpoint {self.url}: duplicate sample ids in one chunk")
        scores: dict[str, float] = {}
        for i in range(0, len(sample_ids), self.batch_size):
            ids = sample_ids[i : i + self.batch_size]
            for sid, value in zip(
                ids,
                self._batch(ids, prompts[i : i + len(ids)], responses[i : i + len(ids)]),
                strict=True,
            ):
                scores.setdefault(sid, value)
        return [scores[sid] for sid in sample_ids]
