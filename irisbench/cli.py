"""The ``irisbench`` command line (Typer + rich): the app of ``irisbench.cli_base`` with every command registered.

The commands are defined by concept in ``cli_eval``, ``cli_train``, ``cli_suites`` and ``cli_analysis``;
importing them registers them on the app, in the order ``irisbench --help`` lists them.
"""

from __future__ import annotations

import sys
from importlib import import_module

from irisbench.cli_base import app

COMMAND_MODULES = ("cli_eval", "cli_train", "cli_suites", "cli_analysis")  # the order --help lists them in
for _name in COMMAND_MODULES:
    import_module(f"irisbench.{_name}")  # defining a command registers it on the app

__all__ = ["COMMAND_MODULES", "app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
