"""The ``irisbench`` command line's shared parts: the Typer app and its sub-apps, help without type noise, the
one-line error guard and default run folders.

The commands live in modules by concept (``cli.eval``: eval and metrics; ``cli.train``: pretraining,
training and the experiment; ``cli.suites``: suites, scorers, ls and env; ``cli.analysis``: analyze,
report and probe); ``irisbench.cli`` registers them all. Every command imports its heavy libraries
(torch, transformers) inside its body, so ``irisbench --help`` and listing commands stay instant. The
project's own errors (``irisbench.core.errors.IrisbenchError``: bad input, unknown names, locked runs) and a
missing file print one clear line and exit with code 2; any other exception is a fault and keeps its
traceback. ``irisbench --debug CMD`` shows the traceback for every error. Run folders that a command
creates by default go under ``results/runs/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from irisbench.core.errors import IrisbenchError, UsageError
from irisbench.core.runs import CONFIG_FILE, ENV_FILE, LOCK_FILE, RESUMES_FILE, RUN_MARKER


class PlainHelp:
    """Help without the ``<bool>``/``<str>`` type column: flags show nothing, value options a plain
    upper-case word (N, X, PATH, TEXT; ``...`` when repeatable)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.param_type_name == "option" and param.metavar is None:
                param.metavar = "" if getattr(param, "is_flag", False) else _metavar(param)
            elif param.param_type_name == "argument" and param.metavar is None:
                param.metavar = param.name.upper()
                param.display_type_rich = lambda ctx: None  # the name column already says it
        return params


class Command(PlainHelp, TyperCommand):
    pass


class Group(PlainHelp, TyperGroup):
    pass


def _metavar(param: Any) -> str:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    repeatable = getattr(annotation, "__origin__", None) is list
    if repeatable:
        annotation = annotation.__args__[0]
    word = {int: "N", float: "X", Path: "PATH", str: "TEXT"}.get(annotation, "VALUE")
    return word + ("..." if repeatable else "")


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=Group,
                  help="irisbench: RL of autoregressive text-to-image models from intrinsic rewards.")
suites_app = typer.Typer(no_args_is_help=True, cls=Group, help="List, show, validate and build evaluation suites.")
app.add_typer(suites_app, name="suites")
scorers_app = typer.Typer(no_args_is_help=True, help="Check the model weights of the real-image scorers.")
app.add_typer(scorers_app, name="scorers")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

EXIT_USAGE = 2
RUNS_ROOT = Path("results") / "runs"  # where run folders go by default (ignored by git)
state = {"debug": False}
_reserved: list[Path] = []  # default run folders this invocation reserved (removed again if a failure left them empty)
_BOOKKEEPING = frozenset({RUN_MARKER, CONFIG_FILE, ENV_FILE, LOCK_FILE, RESUMES_FILE})  # what RunDir writes itself


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("irisbench")
        except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
            v = "0.1.0 (not installed)"
        console.print(f"irisbench {v}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of every error, the project's own too."),
) -> None:
    """irisbench: RL of autoregressive text-to-image models from intrinsic rewards."""
    state["debug"] = debug
    _reserved.clear()


def fail(message: str, code: int = EXIT_USAGE) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # "irisbench[wandb]" kept
    raise typer.Exit(code)


def guard(fn: Callable[[], T], *, options: bool = False) -> T:
    """Run a command body; the project's errors (and a missing file) become one line and exit code 2.

    ``options=True`` marks a body that only reads the command's flags: a ``ValueError`` there is bad
    input too. Anything else propagates with its traceback; ``--debug`` lets every error through. Either
    way a default run folder this invocation reserved and wrote no output into is removed first.
    """
    expected: tuple[type[BaseException], ...] = (IrisbenchError, FileNotFoundError, NotADirectoryError,
                                                 UnicodeDecodeError)
    if options:
        expected = (*expected, ValueError)
    try:
        return fn()
    except expected as e:
        discard_unused_folders()
        if state["debug"]:
            raise
        fail(str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}")
        raise  # unreachable


def refuse_run_folder(out: Path | None, command: str) -> None:
    """``report``/``analyze`` write their own folder: never into a run folder (their files would mix)."""
    from irisbench.core.runs import RUN_MARKER

    if out is not None and (out / RUN_MARKER).is_file():
        try:
            kind = json.loads((out / RUN_MARKER).read_text(encoding="utf-8")).get("kind", "?")
        except (OSError, ValueError, AttributeError):
            kind = "?"
        raise UsageError(f"--out {out} is an irisbench {kind} run folder; {command} writes a folder of its own "
                         f"beside the runs: pass a new --out (e.g. {out.parent / (command + '-' + out.name)})")


def default_out(prefix: str) -> Path:
    from irisbench.core.runs import new_run_path

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each process would reserve a folder of its own
        raise UsageError("under torchrun / accelerate launch pass --out DIR: every process must write the same "
                         "run folder")
    path = new_run_path(RUNS_ROOT, prefix)
    _reserved.append(path)
    return path


def claim_out(out: Path) -> Path:
    """An ``--out`` folder: one this invocation creates is removed again if a failure leaves it without output
    (as a default folder is); one that exists already is never touched."""
    if not out.exists():
        _reserved.append(out)
    return out


def discard_unused_folders() -> None:
    """Remove the run folders this invocation reserved (``default_out``, or an ``--out`` it created:
    ``claim_out``) that hold no output: only the run's bookkeeping (marker, config, environment, lock) and empty
    files. A folder that existed before is never touched, nor one holding any record, image or checkpoint."""
    import shutil

    for path in _reserved:
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else None
        if files is not None and all(f.name in _BOOKKEEPING or f.stat().st_size == 0 for f in files):
            shutil.rmtree(path, ignore_errors=True)
    _reserved.clear()
