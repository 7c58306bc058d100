"""Table files → ``(row number, record, parse problem)`` triples, whatever the format.

JSONL (or one JSON array), CSV, Parquet and folders saved with ``datasets.save_to_disk``, read
offline and in file order. Row numbers are the ones a user would look up (JSONL: line; CSV: line,
header = line 1; Parquet/HF: 1-based index). ``pyarrow`` and ``datasets`` are imported only when
such a file is read. Validation of the records is :mod:`rayrlhf.data.tables`' job.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rayrlhf.config import TableConfig

# File name endings ``format: auto`` reads, and as what (callers name them in their own hints).
SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_FORMATS = ("jsonl", "csv", "parquet", "hf", "argilla")
_BATCH = 1024

Record = tuple[int, dict[str, Any] | None, str | None]


class DataError(ValueError):
    """The data cannot be used: missing file, unknown format, or too many malformed rows."""


@dataclass
class OpenedTable:
    """An opened table: its column names where the format has a header, and its records."""

    columns: list[str] | None
    records: Iterator[Record]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_records(spec: TableConfig) -> Iterator[Record]:
    """Yield ``(row_number, record or None, parse problem or None)`` in file order.

    For ``format: argilla`` these are the export's raw records (its file format is told from the
    name). Raises :class:`DataError` at once when the file cannot be opened or its format is
    unknown.
    """
    return open_table(spec, "table").records


def open_table(spec: TableConfig, what: str) -> OpenedTable:
    """Open ``spec.path`` in its format; ``what`` names the file in errors ("prompts")."""
    path = Path(spec.path)
    fmt = _resolve_format(path, spec.format, what)
    reader = {"jsonl": _open_jsonl, "csv": _open_csv, "parquet": _open_parquet, "hf": _open_hf}
    return reader[fmt](path, what)


def _resolve_format(path: Path, fmt: str, what: str) -> str:
    """The concrete reader for ``fmt``; ``auto`` (and an Argilla export) go by the name."""
    if fmt not in ("auto", "argilla"):
        return fmt
    if not path.exists():
        raise DataError(f"cannot read {what} file {path}: No such file or directory")
    if path.is_dir():
        return "hf"
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise DataError(
            f"{path}: cannot tell the table format from the name; set format to one of "
            f"{', '.join(_FORMATS)} (auto knows {', '.join(SUFFIXES)} and folders = hf)"
        )
    return found


def _open_binary(path: Path, what: str) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as err:
        raise DataError(f"cannot read {what} file {path}: {err.strerror}") from None


def _open_jsonl(path: Path, what: str) -> OpenedTable:
    return OpenedTable(None, _jsonl_records(_open_binary(path, what), path))


def _jsonl_records(handle: IO[bytes], path: Path) -> Iterator[Record]:
    with handle:
        if _starts_with_bracket(handle):
            # Argilla 2.x ``records.to_json`` (and many hand-made ``.json`` files) write one JSON
            # array, not one object per line; take it whole, numbering rows by array position.
            yield from _json_array(handle, path)
            return
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue  # blank lines are not rows, but they keep the numbering honest
            try:
                # utf-8-sig: a BOM on the first line is an editor artefact, not data.
                record = json.loads(line.decode("utf-8-sig"))
            except UnicodeDecodeError:
                yield number, None, "not UTF-8 text"
                continue
            except json.JSONDecodeError as err:
                yield number, None, f"not JSON ({err.msg})"
                continue
            yield _as_object(number, record)


def _starts_with_bracket(handle: IO[bytes]) -> bool:
    """Whether the first non-blank text is ``[``; leaves the handle at the start."""
    first = b""
    for raw in handle:
        first = raw.lstrip(b"\xef\xbb\xbf").strip()
        if first:
            break
    handle.seek(0)
    return first.startswith(b"[")


def _json_array(handle: IO[bytes], path: Path) -> Iterator[Record]:
    try:
        items = json.load(io.TextIOWrapper(handle, encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: starts with '[' but is not a JSON array ({err})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: starts with '[' but is not a JSON array")
    for number, item in enumerate(items, start=1):
        yield _as_object(number, item)


def _as_object(number: int, record: Any) -> Record:
    if isinstance(record, dict):
        return number, record, None
    return number, None, f"not a JSON object ({type(record).__name__})"


def _open_csv(path: Path, what: str) -> OpenedTable:
    try:
        # utf-8-sig strips the BOM spreadsheet programs put before the first header name.
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as err:
        raise DataError(f"cannot read {what} file {path}: {err.strerror}") from None
    reader = csv.reader(handle)
    try:
        header = next((fields for fields in reader if fields), [])
    except (csv.Error, UnicodeDecodeError) as err:
        handle.close()
        raise DataError(f"{path}: cannot read the CSV header ({err})") from None
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        handle.close()
        raise DataError(f"{path}: the CSV header repeats column names {duplicated}")
    return OpenedTable(header, _csv_records(handle, reader, header, path))


def _csv_records(handle: IO[str], reader: Any, header: list[str], path: Path) -> Iterator[Record]:
    with handle:
        while True:
            # A quoted field may span lines: the row is named by the line it starts on.
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise DataError(f"{path}: not UTF-8 text near line {start}") from None
            except csv.Error as err:
                if reader.line_num < start:  # nothing consumed: stop rather than spin
                    raise DataError(f"{path}: line {start}: {err}") from None
                yield start, None, f"not valid CSV ({err})"
                continue
            if not fields:
                continue  # a blank line, as in JSONL
            if len(fields) != len(header):
                yield start, None, f"has {len(fields)} fields, the header has {len(header)}"
                continue
            yield start, dict(zip(header, fields, strict=True)), None


def _open_parquet(path: Path, what: str) -> OpenedTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        raise DataError(f"cannot read {what} file {path}: No such file or directory") from None
    except (OSError, pa.ArrowException, ValueError) as err:
        raise DataError(f"cannot read {what} file {path}: {err}") from None
    batches = parquet.iter_batches(batch_size=_BATCH)
    return OpenedTable(list(parquet.schema_arrow.names), _arrow_records(batches, path))


def _open_hf(path: Path, what: str) -> OpenedTable:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {what} folder {path} as a saved dataset: {err}") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        example = f", e.g. {path / splits[0]}" if splits else ""
        raise DataError(
            f"{path} holds a dataset with splits {splits}; point path at one split's folder"
            + example
        )
    # Arrow batches, not Python rows: no feature decoding (images, audio) for text columns.
    batches = loaded.with_format("arrow").iter(batch_size=_BATCH)
    return OpenedTable(list(loaded.column_names), _arrow_records(batches, path))


def _arrow_records(batches: Iterable[Any], path: Path) -> Iterator[Record]:
    import pyarrow as pa

    number = 0
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"{path}: cannot read rows after row {number}: {err}") from None
        for record in batch.to_pylist():
            number += 1
            yield number, record, None


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
