"""VADER sentiment as a reward: positive continuations score high (needs ``vadersentiment``)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _analyzer():  # noqa: ANN202 - vaderSentiment has no type hints
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_positive(prompts: list[str], responses: list[str]) -> list[float]:
    """VADER compound score of each response, in [-1, 1]."""
    analyzer = _analyzer()
    return [float(analyzer.polarity_scores(r)["compound"]) for r in responses]
