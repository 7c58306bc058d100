"""The record a finished run or stage leaves (``done.json``), and what a rerun makes of it.

A finished run is never overwritten: rerun with the same config that decides its result, it is
reported as finished and left byte for byte as it was; rerun with another, it is refused before
anything runs, naming each changed field by its dotted path. Starting over is an explicit
choice (``run.resume=never``, or another ``run.name``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rayrlhf.config import ConfigError
from rayrlhf.config.results import decided_fields

DONE = "done.json"


def finished_record(
    folder: Path, fingerprint: str, part: dict[str, Any], what: str
) -> dict[str, Any] | None:
    """The summary recorded in ``folder`` when it finished with this ``fingerprint``; None when
    it holds no record. ``part`` is the config tree that decides the result, ``what`` names the
    run or stage in the message of the :class:`ConfigError` raised when it finished otherwise.
    """
    done = folder / DONE
    if not done.exists():
        return None
    record = json.loads(done.read_text())
    if record["fingerprint"] == fingerprint:
        return record["summary"]
    saved, now = record.get("decided", {}), decided_fields(part)
    changed = sorted(p for p in set(saved) | set(now) if saved.get(p, "<unset>") != now.get(p))
    cause = (
        f"another value of {', '.join(changed)}"
        if changed
        else "other data files, or on an upstream stage that changed"
    )
    raise ConfigError(
        f"{what} in {folder} finished with a different config ({cause}): it is kept as it is. "
        "Restore the value, choose another run.name, or set run.resume=never to start it over"
    )


def mark_done(
    folder: Path,
    fingerprint: str,
    summary: dict[str, Any],
    seconds: float,
    part: dict[str, Any] | None = None,
) -> None:
    """Write ``done.json`` last and atomically: its presence means the run is complete. It
    keeps the fields that decided the result (``part``), to name what a rerun changed."""
    record = {
        "fingerprint": fingerprint,
        "seconds": seconds,
        "summary": summary,
        "decided": decided_fields(part or {}),
    }
    tmp = folder / f"{DONE}.tmp"
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(folder / DONE)
