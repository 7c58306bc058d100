"""Procedural reasoning tasks from reasoning-gym as prompt rows (``data.reasoning_gym``,
``eval.reasoning_gym``): generated on this machine from a task name, a size and a seed, with no
hub and no download, the same rows every time.

Each row is ``{"prompt", "answer", "task", "entry"}``: the question with the answer instruction,
the reference answer, and the task's own entry, which its scorer reads
(:func:`rayrlhf.rewards.verifiers.reasoning_gym_answer`). A held-out set is the same task under
another seed, minus any question the training set also holds (procedural tasks can repeat a small
problem under two seeds): the count dropped is reported, never silently kept.
"""

from __future__ import annotations

from typing import Any

from rayrlhf.config import ReasoningGymConfig


def task_rows(spec: ReasoningGymConfig) -> list[dict[str, Any]]:
    """The ``spec.size`` rows of task ``spec.task`` under ``spec.seed``, in the task's order."""
    import reasoning_gym  # its only importer here; the scorer side is rayrlhf.rewards.verifiers

    try:
        dataset = reasoning_gym.create_dataset(spec.task, size=spec.size, seed=spec.seed)
    except Exception as err:  # noqa: BLE001 - an unknown task name: one line, before any actor
        raise ValueError(f"reasoning_gym.task {spec.task!r}: {err}") from None
    rows = []
    for i in range(spec.size):
        entry = dataset[i]
        prompt = (
            f"{entry['question']}\n{spec.instruction}" if spec.instruction else entry["question"]
        )
        rows.append(
            {"prompt": prompt, "answer": str(entry["answer"]), "task": spec.task, "entry": entry}
        )
    return rows


def heldout_rows(
    spec: ReasoningGymConfig, train: ReasoningGymConfig | None
) -> tuple[list[dict[str, Any]], int]:
    """Held-out rows of ``spec``, minus questions of the training task ``train`` (same task
    name); and how many were dropped for it."""
    rows = task_rows(spec)
    if train is None or train.task != spec.task:
        return rows, 0
    seen = {r["prompt"] for r in task_rows(train)}
    kept = [r for r in rows if r["prompt"] not in seen]
    return kept, len(rows) - len(kept)
