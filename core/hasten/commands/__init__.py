"""The core's CLI commands, one module per command.

Each module has ``add_command(subparsers)``, which adds its sub-parser with
a ``handler``. :class:`CoreCommands` adds them all through the same hook as
plugin commands (``hasten_add_commands``), marked ``tryfirst`` so the core's
commands come first in ``hasten --help``, in the order of :data:`COMMANDS`.
Shared arguments (CONFIG, ``--set``) live in :mod:`hasten.commands.arguments`.
"""

from __future__ import annotations

import argparse
import importlib

from hasten.hookspecs import hookimpl

#: the core's command modules, in the order ``hasten --help`` lists them
COMMANDS = (
    "train", "plugins", "schema", "config", "components", "estimate", "compare", "sweep", "sync", "linear_probe",
)


class CoreCommands:
    """Registers the core's commands (``hasten_add_commands``, like a plugin's)."""

    name = "core_commands"

    @hookimpl(tryfirst=True)
    def hasten_add_commands(self, subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        for name in COMMANDS:
            importlib.import_module(f"hasten.commands.{name}").add_command(subparsers)
