"""The ``irisbench`` command line (Typer + rich): the app of ``irisbench.cli.shared`` with every command registered.

The commands are defined by concept in ``cli.eval``, ``cli.train``, ``cli.suites`` and ``cli.analysis``;
importing them registers them on the app, in the order ``irisbench --help`` lists them. ``main`` is the
``irisbench`` console script (pyproject's ``irisbench.cli:main``).
"""

from __future__ import annotations

import sys
from importlib import import_module

from irisbench.cli.shared import app

COMMAND_MODULES = ("eval", "train", "suites", "analysis")  # the order --help lists them in
for _name in COMMAND_MODULES:
    import_module(f"irisbench.cli.{_name}")  # defining a command registers it on the app

__all__ = ["COMMAND_MODULES", "app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
