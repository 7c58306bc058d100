"""Datasets for people to label in Argilla: the two tasks of the human-feedback loop, as files.

- ``ranking`` (reward modelling): text fields ``prompt``, ``response-1``, ``response-2`` (two
  responses of the policy to the same prompt); a rating question ``response_ranking`` with the
  values 1 (the first response is better), 2 (the second is better) and 3 (both are equally
  good); an optional text question ``correct_response`` for a better response when neither is
  right. Exports of it are what ``format: argilla`` tables and ``rayrlhf argilla`` read.
- ``completion`` (SFT data): the text field ``prompt`` and a text question ``completion`` in
  which people write the response.

A dataset folder holds ``settings.json`` (the Argilla 2.x settings as ``rg.Settings.to_json``
writes them, so ``rg.Settings.from_json`` reads them back), ``records.jsonl`` (one flat record
per line: ``id`` and the field values, what ``dataset.records.log`` takes), ``dataset/`` (the
same records as a Hugging Face ``datasets`` folder, which ``records.log`` takes too) and
``label.json`` (how the responses were made). Nothing here needs the Argilla SDK or a server;
:mod:`rayrlhf.data.argilla_sdk` turns the folder into SDK objects and, given a server, a dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from rayrlhf.data.argilla import CORRECTION, FIELDS, RANKING

Task = Literal["ranking", "completion"]
COMPLETION = "completion"
RANKING_VALUES = {
    1: "response-1 is better",
    2: "response-2 is better",
    3: "both are equally good",
}
GUIDELINES = {
    "ranking": (
        "Read the prompt and both responses. In response_ranking choose 1 if response-1 is "
        "better, 2 if response-2 is better, 3 if they are equally good (or equally bad). If "
        "neither response is right, write a better one in correct_response (optional)."
    ),
    "completion": (
        "Read the prompt and write the response you would want the model to give in "
        "completion: complete, correct and in the prompt's language and style."
    ),
}


def _text(
    name: str, title: str, description: str | None = None, required: bool = True
) -> dict[str, Any]:
    """A text field or text question: Argilla serialises both in this one shape."""
    return {
        "name": name,
        "title": title,
        "description": description,
        "required": required,
        "settings": {"type": "text", "use_markdown": False},
        "type": "text",
    }


def settings(task: Task, guidelines: str | None = None) -> dict[str, Any]:
    """The dataset's Argilla settings (``rg.Settings.serialize()``'s shape)."""
    if task == "ranking":
        meanings = "; ".join(f"{v}: {t}" for v, t in RANKING_VALUES.items())
        prompt, first, second = FIELDS
        fields = [
            _text(prompt, "Prompt"),
            _text(first, "Response 1"),
            _text(second, "Response 2"),
        ]
        questions = [
            {
                "name": RANKING,
                "title": "Which response is better? " + meanings,
                "description": meanings,
                "required": True,
                "settings": {"type": "rating", "options": [{"value": v} for v in RANKING_VALUES]},
                "type": "rating",
            },
            _text(
                CORRECTION,
                "A correct response, if neither is right",
                "Optional: write the response the model should have given.",
                required=False,
            ),
        ]
    elif task == "completion":
        fields = [_text(FIELDS[0], "Prompt")]
        questions = [_text(COMPLETION, "Your response", "Write the response to the prompt.", True)]
    else:
        raise ValueError(f"unknown labelling task {task!r}; expected ranking or completion")
    return {
        "guidelines": guidelines or GUIDELINES[task],
        "questions": questions,
        "fields": fields,
        "vectors": [],
        "metadata": [],
        "allow_extra_metadata": False,
        "distribution": {"strategy": "overlap", "min_submitted": 1},
        "mapping": None,
    }


def ranking_records(items: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    """Flat records ``{id, prompt, response-1, response-2}`` from (prompt, first, second)."""
    prompt, first, second = FIELDS
    return [
        {"id": f"pair-{i}", prompt: p, first: a, second: b} for i, (p, a, b) in enumerate(items)
    ]


def completion_records(prompts: list[str]) -> list[dict[str, str]]:
    """Flat records ``{id, prompt}``: people write the completion."""
    return [{"id": f"prompt-{i}", FIELDS[0]: p} for i, p in enumerate(prompts)]


def write_dataset(
    folder: str | Path,
    task: Task,
    records: list[dict[str, str]],
    made_by: dict[str, Any],
    guidelines: str | None = None,
) -> Path:
    """Write ``settings.json``, ``records.jsonl``, ``dataset/`` and ``label.json`` under
    ``folder`` (created; an existing labelling dataset there is refused, not overwritten)."""
    import datasets

    folder = Path(folder)
    if (folder / "settings.json").exists():
        raise FileExistsError(f"{folder} already holds a labelling dataset; choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings(task, guidelines), indent=1))
    with open(folder / "records.jsonl", "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    datasets.disable_progress_bars()
    datasets.Dataset.from_list(records).save_to_disk(str(folder / "dataset"))
    meta = {"task": task, "records": len(records), **made_by}
    (folder / "label.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return folder


def read_records(folder: str | Path) -> list[dict[str, str]]:
    """The flat records of a dataset folder written by :func:`write_dataset`."""
    lines = (Path(folder) / "records.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
