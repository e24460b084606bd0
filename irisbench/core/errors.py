"""The project's error classes: what the command line reports as one line, and the helpers they share.

Every error the project raises for bad input (a file, a field, a name, a flag) derives from
``IrisbenchError``; ``irisbench`` prints such an error as one line and exits with code 2. Any other
exception (a torch bug, a failed assertion) is a fault, not bad input, and keeps its traceback; the
global ``--debug`` shows the traceback for project errors too. Most subclasses also derive from
``ValueError`` (or ``RuntimeError``) so that ``except ValueError`` in callers keeps working.

``did_you_mean``, ``parse_key_value`` and ``read_utf8`` live here because every layer uses them: one phrasing
of "did you mean", one ``KEY=VALUE`` parser (values read as YAML) and one strict reader of a user's text file
for the whole project.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterable
from typing import Any


class IrisbenchError(Exception):
    """Base of every error the project raises for bad input; the CLI prints its message as one line."""


class UsageError(IrisbenchError, ValueError):
    """Bad input that has no more specific class (a flag value, a folder that is not what it should be)."""


class ConfigError(IrisbenchError, ValueError):
    """A config that cannot be used; the message names the file and field."""


class MissingDependencyError(IrisbenchError, RuntimeError):
    """An optional library or file that a requested feature needs is not installed."""


def read_utf8(path: str | os.PathLike[str], error: type[IrisbenchError], kind: str, expected: str) -> str:
    """The text of a user's file, decoded as UTF-8, a leading BOM removed. A missing file, a folder or bytes
    that are not UTF-8 raise ``error`` with one line naming the file (``"{path}: {kind} not found"``,
    ``"{path}: is a directory, expected {expected}"``) and, for a bad byte, its line and offset."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise error(f"{path}: {kind} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected {expected}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = raw.count(b"\n", 0, err.start) + 1
        raise error(f"{path}:{lineno}: not valid UTF-8 (byte offset {err.start}: {err.reason})") from None
    return text.removeprefix("\ufeff")


def read_json(path: str | os.PathLike[str], error: type[IrisbenchError] | None = None, kind: str = "JSON file") -> Any:
    """A JSON file's value; a missing, unreadable or invalid file raises ``error`` (default ``UsageError``) with
    one line naming the file and, for bad JSON, the line and column."""
    import json

    error = error or UsageError
    text = read_utf8(path, error, kind, kind)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None


def did_you_mean(name: str, valid: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``" Did you mean 'x' or 'y'?"`` for the close matches of ``name`` among ``valid``; ``""`` if none."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=n, cutoff=cutoff)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def parse_key_value(item: str, flag: str = "--set", *, numbers: bool = True) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(KEY, value)``, the value read as YAML (numbers, lists, null, true/false).

    ``numbers``: also read ``1e-3`` (YAML 1.1 keeps it a string) as a float. Raises ``UsageError``
    naming ``flag`` when the item has no ``=`` or no key, or the value is not valid YAML.
    """
    import yaml

    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"{flag} {item!r} is not of the form KEY=VALUE")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise UsageError(f"{flag} {item!r}: the value is not valid YAML: {e}") from None
    if numbers and isinstance(parsed, str):
        with contextlib.suppress(ValueError):
            parsed = float(parsed)
    return key, parsed


def parse_key_values(items: Iterable[str], flag: str = "--set", *, numbers: bool = True) -> dict[str, Any]:
    """Several ``KEY=VALUE`` items as a dict (a later key wins)."""
    return dict(parse_key_value(item, flag, numbers=numbers) for item in items)


def parse_named(item: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> ``(NAME, PATH)``; a bare ``PATH`` -> ``(None, PATH)`` (run-folder arguments)."""
    name, sep, rest = item.partition("=")
    return (name, rest) if sep else (None, item)
