"""Named YAML specs: a training preset or an evaluation suite, given by name or as a file path.

Presets (``irisbench/configs/``) and suites (``suites/``) are both YAML files found by name in one
folder, or read from any path a user gives. This module is the one loader for both: a name that is
not there gets "did you mean" and the list of names; a path that does not exist, text that is not
YAML, or a document that is not a mapping each raise the caller's error class naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError, did_you_mean


def spec_names(folder: Any) -> list[str]:
    """The names (file stems) of the ``*.yaml`` files in ``folder`` (a Path or importlib Traversable)."""
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_spec(name_or_path: str | Path, folder: Any, kind: str, error: Callable[[str], IrisbenchError],
              where_prefix: str = "") -> tuple[Any, str]:
    """``(parsed YAML, where)`` for a registered name in ``folder`` or a YAML file path.

    A value ending in ``.yaml``/``.yml``, or naming an existing file, is a path; anything else a name.
    ``where`` names the file for error messages (``where_prefix + name.yaml`` for registered specs).
    """
    import yaml

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise error(f"{path}: no such {kind} file")
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        name, names = str(name_or_path), spec_names(folder)
        if name not in names:
            raise error(f"unknown {kind} {name!r}.{did_you_mean(name, names, cutoff=0.5)} "
                        f"Valid {kind}s: {', '.join(names)}.")
        text, where = (folder / f"{name}.yaml").read_text(encoding="utf-8"), f"{where_prefix}{name}.yaml"
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as e:
        raise error(f"{where}: not valid YAML: {e}") from None
