"""Crash-safe per-image records, atomic file writes and Parquet tables (no torch import here).

Everything downstream is derived from the per-image records, so their file is the one thing that must
survive any crash:

- ``RecordWriter`` appends a batch of records as ONE ``os.write`` (``O_APPEND``) followed by ``fsync``; a
  batch is reported written only once ``append`` returns, and then it is durable. After ``kill -9`` at any
  point the file is a run of complete lines plus, possibly, a torn tail (a last line without its newline, or
  an unparsable last line); reopening drops that tail (truncating the file back to the last good newline) and
  resumes from the set of keys already present. Keys are unique: a duplicate is refused, never written.
  ``RecordWriter`` flocks its own file, so two writers can never interleave on one records file.
- Small files (config, env, results) are replaced atomically: temp file in the same folder, fsync,
  ``os.replace``, fsync of the folder.

Parquet (``write_parquet``): scalar fields become native columns; any field holding a dict or a list in some
record is stored as a column of JSON text, and the names of those columns are kept in the Parquet schema
metadata (``irisbench.json_columns``) so that ``read_parquet`` decodes them back. JSON text keeps ragged or
heterogeneous nested values (per-class detections, reasons) exact without schema inference surprises.

Records never contain NaN/Infinity (refused with the field named): a missing score is ``null``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError, UsageError

logger = logging.getLogger(__name__)

DEFAULT_KEY_FIELDS: tuple[str, ...] = ("prompt_index", "sample_index")
_PARQUET_JSON_META = b"irisbench.json_columns"


class RunLockedError(IrisbenchError, RuntimeError):
    """Another process (or another handle in this process) holds the run's or the records file's lock."""



class RecordsCorruptError(IrisbenchError, ValueError):
    """A records file has an invalid line that is not its last line (so not a torn write)."""




# JSON conversion and atomic writes
# --------------------------------------------------------------------------------------------------

def to_jsonable(obj: Any, where: str = "value") -> Any:
    """``obj`` as plain JSON types: numpy scalars/arrays -> Python numbers/lists, paths -> str.

    Raises ``ValueError`` naming the field (``where`` + dotted path) for a non-finite float or a non-string
    dict key (``json`` would silently turn an int key into a string), ``TypeError`` for an unknown type.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise UsageError(f"{where} is {obj!r}: non-finite floats are not allowed (use null for missing)")
        return float(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise UsageError(f"{where} has a non-string key {k!r} ({type(k).__name__}); "
                                 "JSON keys must be strings")
            out[k] = to_jsonable(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            return to_jsonable(obj.tolist(), where)
        if isinstance(obj, np.generic):
            return to_jsonable(obj.item(), where)
    raise TypeError(f"{where} has type {type(obj).__name__}, which cannot be stored as JSON")


def dumps_strict(obj: Any, where: str = "value", **kwargs: Any) -> str:
    return json.dumps(to_jsonable(obj, where), allow_nan=False, ensure_ascii=False, **kwargs)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def tmp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A fresh hidden name beside ``path`` (not created: files made from it get the usual umask modes)."""
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def atomic_replace(path: str | Path, write: Callable[[Path], None]) -> None:
    """Replace ``path`` atomically with what ``write(tmp)`` writes to a fresh temp file beside it: the temp
    file is fsynced, renamed over ``path`` and the folder fsynced, so readers see the old or the new content,
    never a mix; on any error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""

    def write(tmp: Path) -> None:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(data)

    atomic_replace(path, write)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Atomically replace ``path`` with ``text`` (temp file in the same folder, fsync, ``os.replace``)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (numpy converted; NaN/Infinity refused with the field named)."""
    atomic_write_text(path, dumps_strict(obj, Path(path).name, indent=indent) + "\n")


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------

def _key_of(rec: Any, key_fields: Sequence[str], where: str) -> tuple:
    if not isinstance(rec, dict):
        raise UsageError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    missing = [k for k in key_fields if k not in rec]
    if missing:
        raise UsageError(f"{where}: record lacks key field(s) {missing} (key fields: {list(key_fields)})")
    key = tuple(rec[k] for k in key_fields)
    for k, v in zip(key_fields, key, strict=True):
        if not isinstance(v, (int, str)) or isinstance(v, bool):
            raise UsageError(f"{where}: key field {k!r} must be an int or a string, got {v!r}")
    return key


def _scan_records(path: Path, key_fields: Sequence[str]) -> tuple[list[dict], int, int]:
    """Parse a records file: (records, byte length of the good prefix, bytes in the torn tail).

    The good prefix ends at a newline; a tail without a newline, or an unparsable LAST line, is torn.
    An invalid earlier line, a record without its key fields or a duplicate key raises
    ``RecordsCorruptError``.
    """
    data = path.read_bytes()
    records: list[dict] = []
    seen: dict[tuple, int] = {}
    good = 0
    lines = data.split(b"\n")
    # ``lines[-1]`` is what follows the last newline: empty for a clean file, else a torn partial line.
    complete = lines[:-1]
    for i, raw in enumerate(complete):
        lineno = i + 1
        try:
            rec = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if i == len(complete) - 1:  # last complete line unparsable: torn (e.g. zero-filled) write
                break
            raise RecordsCorruptError(f"{path}, line {lineno}: invalid JSON ({e}); only the last line may be "
                                      "torn by a crash, so this file is corrupt") from None
        try:
            key = _key_of(rec, key_fields, f"{path}, line {lineno}")
        except ValueError as e:
            raise RecordsCorruptError(str(e)) from None
        if key in seen:
            shown = dict(zip(key_fields, key, strict=True))
            raise RecordsCorruptError(f"{path}, line {lineno}: duplicate key {shown} "
                                      f"(first on line {seen[key]})")
        seen[key] = lineno
        records.append(rec)
        good += len(raw) + 1
    return records, good, len(data) - good


def read_records(path: str | Path, key_fields: Sequence[str] = DEFAULT_KEY_FIELDS) -> list[dict]:
    """All complete records of a records file, in file order; read-only (a torn tail is ignored)."""
    path = Path(path)
    records, _, torn = _scan_records(path, key_fields)
    if torn:
        logger.warning("%s: ignoring a torn last line (%d bytes)", path, torn)
    return records


class RecordWriter:
    """Append-only, crash-safe, duplicate-free writer of one ``records.jsonl`` (one JSON object per line).

    Opening reads the file, drops a torn last line (truncating the file to the last good newline), and
    builds the set of done keys (tuples of ``key_fields`` values). ``append`` writes a whole batch in one
    ``os.write`` on an ``O_APPEND`` descriptor, then ``fsync``s: when it returns, the batch is on disk.
    The file is flocked for the writer's lifetime: a second writer raises ``RunLockedError``.
    """

    def __init__(self, path: str | Path, key_fields: Sequence[str] = DEFAULT_KEY_FIELDS):
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        if not self.key_fields:
            raise UsageError("key_fields must name at least one field")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(f"{self.path} is already open for writing by another RecordWriter "
                                     "(another process, or an unclosed writer in this one)") from None
            if not existed:
                fsync_dir(self.path.parent)
            records, good, torn = _scan_records(self.path, self.key_fields)
            self.dropped_bytes = torn
            if torn:
                logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted write",
                               self.path, torn)
                os.ftruncate(self._fd, good)
                os.fsync(self._fd)
            self._size = good
            self._done: set[tuple] = {tuple(r[k] for k in self.key_fields) for r in records}
            self._broken: str | None = None
        except BaseException:
            self.close()
            raise

    # -- queries --------------------------------------------------------------------------------------
    def _as_key(self, key: Any) -> tuple:
        if not isinstance(key, tuple):
            if len(self.key_fields) != 1 and isinstance(key, list):
                key = tuple(key)
            elif len(self.key_fields) == 1:
                key = (key,)
            else:
                raise TypeError(f"key must be a tuple of {self.key_fields}, got {key!r}")
        if len(key) != len(self.key_fields):
            raise UsageError(f"key {key!r} does not match key fields {self.key_fields}")
        return tuple(to_jsonable(k, "key") for k in key)

    def done(self, key: Any) -> bool:
        """Whether the record with this key (a tuple in ``key_fields`` order, or a scalar for one key field)
        is written."""
        return self._as_key(key) in self._done

    @property
    def done_keys(self) -> frozenset[tuple]:
        return frozenset(self._done)

    def __len__(self) -> int:
        return len(self._done)

    # -- writing --------------------------------------------------------------------------------------
    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write a batch durably (one write + fsync). Duplicate keys (in the file or the batch) are refused
        and nothing of the batch is written; so are non-finite floats and non-JSON values."""
        if self._fd is None:
            raise UsageError(f"{self.path}: writer is closed")
        if self._broken:
            raise RuntimeError(f"{self.path}: writer unusable after a failed write ({self._broken}); "
                               "reopen it")
        lines: list[str] = []
        keys: list[tuple] = []
        batch_keys: set[tuple] = set()
        for i, rec in enumerate(records):
            where = f"{self.path}: record {i} of the batch"
            if not isinstance(rec, Mapping):
                raise UsageError(f"{where}: a record must be a dict, got {type(rec).__name__}")
            rec = to_jsonable(rec, where)
            key = _key_of(rec, self.key_fields, where)
            shown = dict(zip(self.key_fields, key, strict=True))
            if key in self._done:
                raise UsageError(f"{where}: key {shown} is already written (duplicate)")
            if key in batch_keys:
                raise UsageError(f"{where}: key {shown} appears twice in this batch")
            batch_keys.add(key)
            keys.append(key)
            lines.append(json.dumps(rec, allow_nan=False, ensure_ascii=False) + "\n")
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # short write (signal, disk nearly full): finish the batch
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except BaseException as e:
            # Never leave a partial batch behind a later batch (it would become corruption mid-file).
            try:
                os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
            except OSError as e2:
                self._broken = f"{e}; truncating back also failed: {e2}"
            raise
        self._size += len(data)
        self._done.update(keys)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # also releases the flock

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# --------------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------------

def write_parquet(records_jsonl: str | Path, parquet_path: str | Path,
                  key_fields: Sequence[str] = DEFAULT_KEY_FIELDS) -> int:
    """Convert a records file to Parquet (atomically), rows sorted by ``key_fields``; returns the row count.

    Columns are the union of the records' fields in first-seen order (missing values are null). A field
    that holds a dict or list in any record is stored as JSON text and listed in the schema metadata
    ``irisbench.json_columns``; ``read_parquet`` decodes it back.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = read_records(records_jsonl, key_fields)
    records.sort(key=lambda r: tuple((isinstance(r[k], str), r[k]) for k in key_fields))
    names: dict[str, None] = {k: None for k in key_fields}
    for r in records:
        names.update(dict.fromkeys(r))
    columns: dict[str, Any] = {}
    json_cols: list[str] = []
    for name in names:
        values = [r.get(name) for r in records]
        if any(isinstance(v, (dict, list)) for v in values):
            json_cols.append(name)
            values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            raise UsageError(f"{records_jsonl}: field {name!r} mixes value types {kinds} across records; "
                             f"cannot store it as one Parquet column ({e})") from None
    table = pa.table(columns)
    table = table.replace_schema_metadata({_PARQUET_JSON_META: json.dumps(json_cols).encode()})
    atomic_replace(parquet_path, lambda tmp: pq.write_table(table, tmp))
    return len(records)


def read_parquet(parquet_path: str | Path):  # -> pandas.DataFrame
    """Read a Parquet file written by ``write_parquet`` into a DataFrame, decoding its JSON-text columns.

    (pandas turns an int column with nulls into float64; the JSONL file stays the exact source.)
    """
    import pandas as pd
    import pyarrow.parquet as pq

    table = pq.read_table(parquet_path)
    meta = table.schema.metadata or {}
    json_cols = json.loads(meta.get(_PARQUET_JSON_META, b"[]"))
    df = table.to_pandas()
    for c in json_cols:  # from the Arrow column: nulls are None there (pandas may show them as NaN)
        values = [None if v is None else json.loads(v) for v in table.column(c).to_pylist()]
        df[c] = pd.Series(values, index=df.index, dtype=object)
    return df


# --------------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------------
