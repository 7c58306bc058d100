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


def contains_target_word(prompts: list[str], responses: list[str]) -> list[float]:
    """1 if the response says ``"good"`` at all, else 0: a pass/fail reward, like a verifier's.

    Groups of samples often score all 0 or all 1 under it, which is what dynamic sampling is for.
    """
    return [float(TARGET_WORD in response.split()) for response in responses]


def brevity(prompts: list[str], responses: list[str]) -> list[float]:
    """1 - (words / 32), floored at 0: shorter answers score higher. A reward that varies within
    every group of a real model's samples, for checks that need a non-zero gradient."""
    return [max(0.0, 1.0 - len(response.split()) / 32) for response in responses]
