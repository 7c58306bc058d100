"""Rule-based rewards: deterministic, fast, for tests and learning checks."""

from __future__ import annotations

TARGET_WORD = "good"


def target_word_frequency(prompts: list[str], responses: list[str]) -> list[float]:
    """Fraction of the response's words that are ``"good"`` (0 for an empty response)."""
    out = []
    for response in responses:
        words = response.split()
        out.append(sum(w == TARGET_WORD for w in words) / len(words) if words else 0.0)
    return out
