"""Run directories: the marker, the resolved config, provenance and the run lock.

A run directory (docs/design.md §4) holds ``run.json`` (a marker: ``{"irisbench_run": 1, "kind", "created"}``),
``config.yaml`` (the resolved config), ``env.json`` (versions, git hash, hardware of the creating session) and
whatever the run produces, e.g. ``eval/<suite>/<checkpoint>/records.jsonl`` (written through
``irisbench.core.records``, crash-safe). ``RunDir.lock()`` takes an exclusive, non-blocking ``flock`` on
``<run>/.lock`` (holder pid written inside), released by the kernel when the holder dies. Its files are
replaced atomically (``irisbench.core.records.atomic_write_*``).

No torch import here. ``env.json`` holds what ``irisbench.core.provenance.env_info`` records.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import re
import socket
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError, UsageError
from irisbench.core.records import (
    DEFAULT_KEY_FIELDS,
    RecordWriter,
    RunLockedError,
    atomic_write_json,
    atomic_write_text,
    dumps_strict,
    fsync_dir,
    tmp_sibling,
    to_jsonable,
)

logger = logging.getLogger(__name__)

RUN_MARKER = "run.json"
CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
LOCK_FILE = ".lock"
RESUMES_FILE = "resumes.jsonl"
RUN_FORMAT = 1


class NotARunError(IrisbenchError, ValueError):
    """The folder is not an irisbench run directory (no valid ``run.json``)."""




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


def _portable(value: Any) -> Any:
    """A path into an installed irisbench's shipped assets, without the checkout it was installed from: the same
    shipped checkpoint read from another clone (or a moved one) is the same checkpoint."""
    if isinstance(value, str) and SHIPPED_ASSETS.search(value):
        return SHIPPED_ASSETS.sub("<irisbench>/assets/", value)
    return value


SHIPPED_ASSETS = re.compile(r"^.*[/\\]irisbench[/\\]assets[/\\]")


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two (nested) configs, one line per dotted key. Paths of the shipped
    assets compare by asset (``_portable``), so a run resumes from another clone of the same version."""
    a, b = _flatten(dict(old)), _flatten(dict(new))
    lines = []
    for k in sorted(set(a) | set(b)):
        if k not in b:
            lines.append(f"  - {k}: {a[k]!r} (removed)")
        elif k not in a:
            lines.append(f"  + {k}: {b[k]!r} (added)")
        elif _portable(a[k]) != _portable(b[k]):
            lines.append(f"  ~ {k}: {a[k]!r} -> {b[k]!r}")
    return lines


def _without(config: Mapping[str, Any], keys: Collection[str]) -> dict[str, Any]:
    """``config`` without its top-level ``keys``."""
    return {k: v for k, v in config.items() if k not in keys}


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
        env_text = dumps_strict(env, "env", indent=2) + "\n"
        tmp = tmp_sibling(path, "creating")
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
        fsync_dir(path.parent)
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
                       allow_config_change: bool = False, resumable: Collection[str] = ()) -> RunDir:
        """Resume the run at ``path`` if it is one, else create it.

        On resume the kind must match and the saved config must equal ``config`` (compared as they read
        back from YAML); otherwise a ``ValueError`` lists the changed keys. With ``allow_config_change`` the
        new config replaces ``config.yaml`` and the old one is kept as ``config.<time>.yaml``; keys in
        ``resumable`` (how the run executes, e.g. its thread count) may change without it, the same way. Each resume
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
        blocking = run.config_changes(config, ignoring=resumable)
        if blocking and not allow_config_change:
            raise UsageError(f"the config differs from the one saved in {path / CONFIG_FILE}:\n"
                             + "\n".join(blocking)
                             + "\nuse a new run folder, or allow the change explicitly (allow_config_change)")
        if diff:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
            atomic_write_text(path / f"config.{stamp}.yaml", (path / CONFIG_FILE).read_text(encoding="utf-8"))
            atomic_write_text(path / CONFIG_FILE, _yaml_dump(config))
            logger.warning("%s: config changed on resume:\n%s", path, "\n".join(diff))
        line = dumps_strict({"time": _now_iso(), "env": env, "config_changes": diff}, "resume") + "\n"
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

    def config_changes(self, config: Mapping[str, Any], ignoring: Collection[str] = ()) -> list[str]:
        """How ``config`` differs from the saved one (``config_diff`` lines; empty when they are equal), its
        top-level keys in ``ignoring`` left out."""
        return config_diff(_without(self.config, ignoring), _without(_normalise_config(config), ignoring))

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
