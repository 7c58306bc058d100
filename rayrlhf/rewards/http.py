"""A reward endpoint over HTTP: batched requests, a deadline, retries that count nothing twice.

Protocol (what ``rayrlhf serve-reward`` speaks)::

    POST URL  {"sample_ids": [...], "prompts": [...], "responses": [...]}
    200       {"sample_ids": [...], "scores": [...]}   the same ids in order, one finite float each

A batch is retried (connection refused or reset, a timeout, a 5xx answer) with backoff. Each
sample's score is taken from the first reply whose ids match its request, and kept once: a late
or repeated reply can replace nothing, and a reply that names other ids is refused. Replies are
checked like local scorers' (one finite number per sample) and errors name the endpoint and the
first sample of the batch.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from rayrlhf.rewards.validation import RewardError, validate_scores

RETRYABLE = (urllib.error.URLError, TimeoutError, ConnectionError)


class HttpScorer:
    """Scores (prompt, response) pairs at ``url``, ``batch_size`` pairs per request."""

    def __init__(
        self,
        url: str,
        batch_size: int,
        timeout_s: float,
        retries: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url, self.batch_size = url, batch_size
        self.timeout_s, self.retries, self.sleep = timeout_s, retries, sleep
        self.requests = 0  # sent, retries included (for tests and metrics)

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
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
