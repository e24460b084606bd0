"""Run directories, atomic writes, crash-safe per-image records and locks.

A run directory (DESIGN.md §4) holds ``run.json`` (a marker: ``{"irisbench_run": 1, "kind", "created"}``),
``config.yaml`` (the resolved config), ``env.json`` (versions, git hash, hardware of the creating session) and
whatever the run produces, e.g. ``eval/<suite>/<checkpoint>/records.jsonl``. Everything downstream is derived
from the per-image records, so their file is the one thing that must survive any crash:

- ``RecordWriter`` appends a batch of records as ONE ``os.write`` (``O_APPEND``) followed by ``fsync``; a
  batch is reported written only once ``append`` returns, and then it is durable. After ``kill -9`` at any
  point the file is a run of complete lines plus, possibly, a torn tail (a last line without its newline, or
  an unparsable last line); reopening drops that tail (truncating the file back to the last good newline) and
  resumes from the set of keys already present. Keys are unique: a duplicate is refused, never written.
- ``RunDir.lock()`` takes an exclusive, non-blocking ``flock`` on ``<run>/.lock`` (holder pid written inside),
  released by the kernel when the holder dies. ``RecordWriter`` also flocks its own file, so two writers can
  never interleave on one records file even when the caller forgot the run lock.
- Small files (config, env, results) are replaced atomically: temp file in the same folder, fsync,
  ``os.replace``, fsync of the folder.

Parquet (``write_parquet``): scalar fields become native columns; any field holding a dict or a list in some
record is stored as a column of JSON text, and the names of those columns are kept in the Parquet schema
metadata (``irisbench.json_columns``) so that ``read_parquet`` decodes them back. JSON text keeps ragged or
heterogeneous nested values (per-class detections, reasons) exact without schema inference surprises.

Records never contain NaN/Infinity (refused with the field named): a missing score is ``null``.
No torch import here. ``env.json`` holds what ``irisbench.provenance.env_info`` records.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import math
import os
import re
import secrets
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from irisbench.errors import IrisbenchError, UsageError

logger = logging.getLogger(__name__)

RUN_MARKER = "run.json"
CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
LOCK_FILE = ".lock"
RESUMES_FILE = "resumes.jsonl"
RUN_FORMAT = 1
DEFAULT_KEY_FIELDS: tuple[str, ...] = ("prompt_index", "sample_index")
_PARQUET_JSON_META = b"irisbench.json_columns"


class RunLockedError(IrisbenchError, RuntimeError):
    """Another process (or another handle in this process) holds the run's or the records file's lock."""


class NotARunError(IrisbenchError, ValueError):
    """The folder is not an irisbench run directory (no valid ``run.json``)."""


class RecordsCorruptError(IrisbenchError, ValueError):
    """A records file has an invalid line that is not its last line (so not a torn write)."""


# --------------------------------------------------------------------------------------------------
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


def _dumps(obj: Any, where: str = "value", **kwargs: Any) -> str:
    return json.dumps(to_jsonable(obj, where), allow_nan=False, ensure_ascii=False, **kwargs)


def _fsync_dir(path: Path) -> None:
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


def _tmp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A fresh hidden name beside ``path`` (not created: files made from it get the usual umask modes)."""
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Atomically replace ``path`` with ``text`` (temp file in the same folder, fsync, ``os.replace``)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (numpy converted; NaN/Infinity refused with the field named)."""
    atomic_write_text(path, _dumps(obj, Path(path).name, indent=indent) + "\n")


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
                _fsync_dir(self.path.parent)
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
    parquet_path = Path(parquet_path)
    parquet_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(parquet_path)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, parquet_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(parquet_path.parent)
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

def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "<root>": d}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two (nested) configs, one line per dotted key."""
    a, b = _flatten(dict(old)), _flatten(dict(new))
    lines = []
    for k in sorted(set(a) | set(b)):
        if k not in b:
            lines.append(f"  - {k}: {a[k]!r} (removed)")
        elif k not in a:
            lines.append(f"  + {k}: {b[k]!r} (added)")
        elif a[k] != b[k]:
            lines.append(f"  ~ {k}: {a[k]!r} -> {b[k]!r}")
    return lines


def _yaml_dump(config: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(to_jsonable(dict(config), "config"), sort_keys=False, allow_unicode=True)


def _normalise_config(config: Mapping[str, Any]) -> dict:
    """The config as it reads back from config.yaml (tuples -> lists, numpy -> Python), for comparison."""
    import yaml

    return yaml.safe_load(_yaml_dump(config)) or {}


class RunDir:
    """An irisbench run directory. Construct with ``create``, ``open`` or ``open_or_create``."""

    def __init__(self, path: Path, marker: dict):
        self.path = path
        self._marker = marker

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, *, kind: str, config: Mapping[str, Any],
               env: Mapping[str, Any]) -> RunDir:
        """Create a run at ``path`` (which must not exist, or be an empty folder).

        The run is assembled in a hidden sibling folder and renamed into place, so ``path`` is either
        absent/empty or a complete run (with ``run.json``) — never half-made — and two concurrent
        creators cannot both succeed.
        """
        path = Path(path)
        if not kind or not isinstance(kind, str):
            raise UsageError(f"kind must be a non-empty string, got {kind!r}")
        if path.exists():
            if not path.is_dir():
                raise UsageError(f"cannot create a run at {path}: it exists and is not a folder")
            if _is_run(path):
                raise UsageError(f"{path} is already an irisbench run; use RunDir.open_or_create to "
                                 "resume it")
            if any(path.iterdir()):
                raise UsageError(f"cannot create a run at {path}: the folder is not empty and is not an "
                                 "irisbench run (no run.json); choose a new or empty folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        marker = {"irisbench_run": RUN_FORMAT, "kind": kind, "created": _now_iso()}
        config_text = _yaml_dump(config)
        env_text = _dumps(env, "env", indent=2) + "\n"
        tmp = _tmp_sibling(path, "creating")
        tmp.mkdir()
        try:
            atomic_write_text(tmp / CONFIG_FILE, config_text)
            atomic_write_text(tmp / ENV_FILE, env_text)
            atomic_write_json(tmp / RUN_MARKER, marker)
            try:
                os.rename(tmp, path)  # atomic; replaces an empty folder, fails on a non-empty one
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise UsageError(f"cannot create a run at {path}: it appeared concurrently and is not "
                                     "empty") from None
                raise
        except BaseException:
            for p in (tmp / CONFIG_FILE, tmp / ENV_FILE, tmp / RUN_MARKER):
                with contextlib.suppress(OSError):
                    p.unlink()
            with contextlib.suppress(OSError):
                tmp.rmdir()
            raise
        _fsync_dir(path.parent)
        return cls(path, marker)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open an existing run; ``NotARunError`` naming the path if ``run.json`` is missing or invalid."""
        path = Path(path)
        marker_path = path / RUN_MARKER
        if not path.is_dir():
            raise NotARunError(f"{path} is not an irisbench run: no such folder")
        if not marker_path.is_file():
            raise NotARunError(f"{path} is not an irisbench run: {RUN_MARKER} is missing")
        try:
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise NotARunError(f"{path} is not an irisbench run: {marker_path} is unreadable ({e})") from None
        if not isinstance(marker, dict) or "irisbench_run" not in marker:
            raise NotARunError(f"{path} is not an irisbench run: {marker_path} lacks the 'irisbench_run' "
                               "field")
        if marker["irisbench_run"] != RUN_FORMAT:
            raise NotARunError(f"{path}: unsupported run format {marker['irisbench_run']!r} in {marker_path} "
                               f"(this irisbench reads format {RUN_FORMAT})")
        if not isinstance(marker.get("kind"), str):
            raise NotARunError(f"{path}: {marker_path} has no valid 'kind'")
        return cls(path, marker)

    @classmethod
    def open_or_create(cls, path: str | Path, kind: str, config: Mapping[str, Any], env: Mapping[str, Any], *,
                       allow_config_change: bool = False) -> RunDir:
        """Resume the run at ``path`` if it is one, else create it.

        On resume the kind must match and the saved config must equal ``config`` (compared as they read
        back from YAML); otherwise a ``ValueError`` lists the changed keys. With ``allow_config_change`` the
        new config replaces ``config.yaml`` and the old one is kept as ``config.<time>.yaml``. Each resume
        appends ``{"time", "env", "config_changes"}`` to ``resumes.jsonl``; ``env.json`` keeps the creator's.
        Take ``lock()`` right after, before writing anything else.
        """
        path = Path(path)
        if not _is_run(path):
            if path.exists() and path.is_dir() and (path / RUN_MARKER).exists():
                cls.open(path)  # raises NotARunError with the reason (invalid run.json)
            return cls.create(path, kind=kind, config=config, env=env)
        run = cls.open(path)
        if run.kind != kind:
            raise UsageError(f"{path} is a run of kind {run.kind!r}, not {kind!r}")
        diff = run.config_changes(config)
        if diff and not allow_config_change:
            raise UsageError(f"the config differs from the one saved in {path / CONFIG_FILE}:\n"
                             + "\n".join(diff)
                             + "\nuse a new run folder, or allow the change explicitly (allow_config_change)")
        if diff:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
            atomic_write_text(path / f"config.{stamp}.yaml", (path / CONFIG_FILE).read_text(encoding="utf-8"))
            atomic_write_text(path / CONFIG_FILE, _yaml_dump(config))
            logger.warning("%s: config changed on resume:\n%s", path, "\n".join(diff))
        line = _dumps({"time": _now_iso(), "env": env, "config_changes": diff}, "resume") + "\n"
        fd = os.open(path / RESUMES_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return run

    # -- contents -------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self._marker["kind"]

    @property
    def created(self) -> str:
        return self._marker.get("created", "")

    @property
    def config(self) -> dict:
        import yaml

        p = self.path / CONFIG_FILE
        try:
            return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"{p}: cannot read the run's config ({e})") from None

    def config_changes(self, config: Mapping[str, Any]) -> list[str]:
        """How ``config`` differs from the saved one (``config_diff`` lines; empty when they are equal)."""
        return config_diff(self.config, _normalise_config(config))

    @property
    def env(self) -> dict:
        p = self.path / ENV_FILE
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"{p}: cannot read the run's environment ({e})") from None

    def records(self, relpath: str | Path, key_fields: Sequence[str] = DEFAULT_KEY_FIELDS) -> RecordWriter:
        """A ``RecordWriter`` for ``<run>/<relpath>`` (e.g. ``eval/geneval/step-100/records.jsonl``)."""
        return RecordWriter(self.path / relpath, key_fields)

    # -- locking --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Exclusive, non-blocking lock of the run (``flock`` on ``<run>/.lock``); ``RunLockedError`` if held.

        The kernel releases it when the holder exits or is killed. Note: ``flock`` is per open file, so a
        second ``lock()`` in the same process is refused too; child processes forked inside keep it held.
        """
        lock_path = self.path / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
                pid = holder[0] if holder else "unknown"
                who = " (this process)" if pid == str(os.getpid()) else ""
                host = f" on {holder[1]}" if len(holder) > 1 else ""
                raise RunLockedError(f"run {self.path} is locked by another process: pid {pid}{host}{who}. "
                                     f"Wait for it to finish or stop it; lock file: {lock_path}") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            try:
                yield self
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, kind={self.kind!r})"


def _is_run(path: Path) -> bool:
    try:
        RunDir.open(path)
        return True
    except NotARunError:
        return False


def new_run_path(root: str | Path = "results/runs", prefix: str = "run") -> Path:
    """Reserve a fresh ``<root>/<prefix>-YYYYmmdd-HHMMSS[-N]`` (local time) and return it.

    The folder is created empty (``os.mkdir`` is atomic, so concurrent callers get different paths);
    ``RunDir.create`` accepts an empty folder.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", prefix or ""):
        raise UsageError(f"run prefix {prefix!r} must be letters, digits, '.', '_' or '-' "
                         "(no path separators)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for n in range(10_000):
        candidate = root / (base if n == 0 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not find a free run name for {root / base}")  # pragma: no cover
