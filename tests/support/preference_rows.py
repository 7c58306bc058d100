"""Synthetic preference pairs for the reward-model and DPO tests: "good" beats "bad"."""

from __future__ import annotations

import random

WORDS = ["movie", "film", "plot", "the", "a", "is", "was", "story", "actor", "scene"]


def good_beats_bad(n: int, seed: int, tie_every: int = 0, filler: int = 3) -> list[dict]:
    """``n`` rows (prompt, chosen, rejected, tie): the chosen response says "good" among
    ``filler`` random words, the rejected one "bad"; every ``tie_every``-th pair is a tie (both
    say "good")."""
    rnd = random.Random(seed)

    def text(word: str) -> str:
        words = [rnd.choice(WORDS) for _ in range(filler)]
        words.insert(rnd.randrange(filler + 1), word)
        return " ".join(words)

    rows = []
    for i in range(n):
        tie = bool(tie_every) and i % tie_every == 0
        rows.append(
            {
                "prompt": " ".join(rnd.choice(WORDS) for _ in range(2)),
                "chosen": text("good"),
                "rejected": text("good" if tie else "bad"),
                "tie": tie,
            }
        )
    return rows
