"""Our checkpoint commit protocol: temporary folder, parts, manifest, rename, pointer.

Layout under a run's (or stage's) ``checkpoints/`` folder::

    checkpoints/latest.json          {"name": "step-00000004"}: replaced last, atomically
    checkpoints/step-00000004/       a committed checkpoint
        manifest.json                a sha256 and a size per file (and who hashed it), world
                                     size, ZeRO stage, the config tree, the caller's fields
        driver.json, learner/...     the parts (written by the driver and each learner rank)
    checkpoints/tmp-step-00000006/   one being written: never read, removed on the next write

Each learner rank hashes the files it wrote itself (:func:`owned_files`), and checks them
again before it loads them: the driver hashes only its own files, so on a multi-node cluster
with shared storage the learner's gigabytes never travel through the head node. The driver
checks that every file is there with its size.

A crash at any point leaves ``latest.json`` naming the previous complete checkpoint. A checkpoint
whose manifest is missing or unreadable, or whose files are missing, truncated or changed, is
refused by name (:class:`CheckpointError`), never replaced by a silent fresh start. DeepSpeed's
own ``latest`` file is not used: DeepSpeed writes it before its ranks have finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

MANIFEST = "manifest.json"
POINTER = "latest.json"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names it and what is wrong."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified, committed checkpoint: its folder and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def step(self) -> int:
        """The step (optimizer steps for a supervised stage) the checkpoint was taken after."""
        return int(self.manifest["step"])


def step_name(step: int) -> str:
    """The folder name of the checkpoint taken after ``step``."""
    return f"step-{step:08d}"


def begin(root: str | Path, step: int) -> Path:
    """A fresh, empty temporary folder for the checkpoint of ``step`` (older leftovers removed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob("tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = root / f"tmp-{step_name(step)}"
    tmp.mkdir()
    return tmp


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file, fsync and rename: all or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def hash_files(folder: Path, files: list[Path], by: str) -> dict[str, dict[str, Any]]:
    """Manifest entries of ``files`` under ``folder``: flushed to disk, then sha256 and size."""
    entries = {}
    for path in files:
        with path.open("rb") as f:
            os.fsync(f.fileno())
        entries[path.relative_to(folder).as_posix()] = {
            "sha256": file_digest(path),
            "bytes": path.stat().st_size,
            "by": by,
        }
    return entries


def owned_files(folder: str | Path, rank: int) -> list[Path]:
    """The files of a learner checkpoint folder that learner rank ``rank`` wrote: DeepSpeed's
    ``zero_pp_rank_<rank>_*`` partitions and the rank's own state file; rank 0 also every file
    no rank's name marks (DeepSpeed's model states and what rank 0 writes alone)."""
    mine, out = (f"zero_pp_rank_{rank}_", rank_file(folder, rank).name), []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        name = path.name
        ranked = "zero_pp_rank_" in name or (name.startswith("rank-") and name.endswith(".pt"))
        if name.startswith(mine[0]) or name == mine[1] or (rank == 0 and not ranked):
            out.append(path)
    return out


def check_owned(
    folder: str | Path, rank: int, entries: dict[str, dict[str, Any]], ranks: int = 1
) -> None:
    """A rank's check of the files of a committed checkpoint it loads against their manifest
    ``entries`` (paths relative to ``folder``): the files saved rank ``rank`` wrote, and on a
    group of ``ranks`` smaller than the one that saved, those of saved ranks ``rank + ranks``,
    ``rank + 2·ranks``, ... too. CheckpointError by name."""
    folder = Path(folder)
    saved = len(list(folder.glob("rank-*.pt")))
    for owner in range(rank, max(saved, 1), ranks):
        for path in owned_files(folder, owner):
            name = path.relative_to(folder).as_posix()
            entry = entries.get(name)
            if entry is None or file_digest(path) != entry["sha256"]:
                raise CheckpointError(
                    f"checkpoint {folder.parent} refused: file {folder.name}/{name} does not "
                    f"match its sha256 in the manifest (checked by learner rank {rank})"
                )


def commit(
    tmp: Path,
    step: int,
    fields: dict[str, Any],
    keep: int,
    hashed: dict[str, dict[str, Any]] | None = None,
) -> Checkpoint:
    """Hash every file of ``tmp`` not in ``hashed``, write its manifest, rename it into place,
    move the pointer.

    ``hashed``: manifest entries the learner ranks computed for the files they wrote (paths
    relative to ``tmp``); each is checked for presence and size here, not read again.
    ``fields`` (world size, ZeRO stage, config, ...) are stored in the manifest beside the
    hashes. Afterwards only the newest ``keep`` checkpoints remain.
    """
    hashed = dict(hashed or {})
    rest = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
    rest = [p for p in rest if p.relative_to(tmp).as_posix() not in hashed]
    for name, entry in hashed.items():
        if (tmp / name).stat().st_size != entry["bytes"]:
            raise CheckpointError(f"checkpoint part {name} changed after its rank hashed it")
    files = dict(sorted({**hashed, **hash_files(tmp, rest, "driver")}.items()))
    manifest = {"format": FORMAT, "step": step, "files": files, **fields}
    inject_fault(f"checkpoint_before_manifest:{step}")
    write_json_atomic(tmp / MANIFEST, manifest)
    final = tmp.parent / step_name(step)
    if final.exists():  # a checkpoint of this step from a run that was rolled back
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(tmp.parent)
    write_json_atomic(tmp.parent / POINTER, {"name": final.name})
    _prune(tmp.parent, keep)
    return Checkpoint(final, manifest)


def _prune(root: Path, keep: int) -> None:
    committed = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in committed[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def verify(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path`` after checking its manifest, every file's size, and the hash
    of every file the driver hashed (a learner rank checks its own: :func:`check_owned`)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        int(manifest["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {path} refused: no valid {MANIFEST} ({type(err).__name__}: {err})"
        ) from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} refused: format {manifest.get('format')!r}")
    for name, entry in files.items():
        part = path / name
        if not part.is_file():
            raise CheckpointError(f"checkpoint {path} refused: file {name} is missing")
        size = part.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(
                f"checkpoint {path} refused: file {name} has {size} bytes, the manifest says "
                f"{entry['bytes']} (truncated or rewritten)"
            )
        if entry.get("by", "driver") == "driver" and file_digest(part) != entry["sha256"]:
            raise CheckpointError(
                f"checkpoint {path} refused: file {name} does not match its sha256 in the manifest"
            )
    return Checkpoint(path, manifest)


def latest(root: str | Path) -> Checkpoint | None:
    """The newest committed checkpoint under ``root``, verified; None when none was committed.

    The pointer decides: a checkpoint it names that fails verification is an error, not a
    reason to start afresh or to pick another one silently.
    """
    pointer = Path(root) / POINTER
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint pointer {pointer} is unreadable: {err}") from None
    return verify(Path(root) / name)


# ---- random generators ---------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every random generator of this process: Python, NumPy, torch CPU and CUDA (if present)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- fault injection -------------------------------------------------------------------------

FAULT_ENV = "RAYRLHF_FAULT"


def inject_fault(point: str) -> None:
    """Crash or interrupt this process at ``point`` when ``RAYRLHF_FAULT`` names it (tests).

    ``RAYRLHF_FAULT=checkpoint_before_manifest:4`` SIGKILLs the driver after the step-4
    checkpoint's parts are written and before its manifest exists: what a power cut or a
    preemption in the middle of a checkpoint leaves. ``after_step:3`` SIGKILLs it once step 3
    is logged; ``ctrl_c_after_step:3`` then sends SIGINT to its whole process group, as Ctrl-C
    in a terminal does. Exact points, where a test's timing would race a fast run.
    """
    import signal

    wanted = os.environ.get(FAULT_ENV)
    if wanted == point:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"ctrl_c_{point}":
        os.killpg(os.getpgrp(), signal.SIGINT)


# ---- a learner rank's own part ----------------------------------------------------------------


def rank_file(path: str | Path, rank: int) -> Path:
    """The file holding learner rank ``rank``'s own state in a checkpoint folder."""
    return Path(path) / f"rank-{rank:03d}.pt"


def save_rank_state(path: str | Path, rank: int, state: dict[str, Any]) -> None:
    """Write a rank's state (its counters plus every random generator of its process)."""
    torch.save({**state, "rng": rng_state()}, rank_file(path, rank))


def load_rank_state(path: str | Path, rank: int) -> dict[str, Any]:
    """Read a rank's state and restore its random generators; returns the rest. A rank that
    the saving group did not have (resumed on more ranks) reads saved rank ``rank % N``'s: the
    ranks' counters agree, and their generators draw nothing the update depends on."""
    saved = len(list(Path(path).glob("rank-*.pt")))
    # Our own file, its hash checked against the manifest: not an untrusted pickle.
    state = torch.load(rank_file(path, rank % max(saved, 1)), weights_only=False)
    set_rng_state(state.pop("rng"))
    return state
