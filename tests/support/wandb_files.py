"""Read an offline W&B run back from its files: the records of ``run-<id>.wandb``.

The file is a LevelDB-style log (what W&B's Go core writes and ``wandb sync`` reads): a 7-byte
header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte
header (CRC32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last) before its
bytes; a chunk header never straddles a block, whose tail is then zero padding. Each whole
record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of one ``.wandb`` file, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    out, pos, parts = [], HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block tail: padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += room
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


def history(run_dir: Path) -> list[dict[str, Any]]:
    """The history rows of every offline run under ``run_dir/wandb`` (a resumed run's files
    included), in the order they were written: ``{"_step": n, key: value, ...}``."""
    rows = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in records(path):
            if record.WhichOneof("record_type") == "history":
                row = {}
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    row[key] = json.loads(item.value_json)
                rows.append(row)
    return rows


def config(run_dir: Path) -> dict[str, Any]:
    """The config items of the runs under ``run_dir/wandb``."""
    out: dict[str, Any] = {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in records(path):
            kind = record.WhichOneof("record_type")
            items = record.config.update if kind == "config" else []
            if kind == "run":
                items = record.run.config.update
            for item in items:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
