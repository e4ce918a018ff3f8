"""Core CLI commands beyond train/plugins/schema (estimate, compare, ...).

Each command module adds its sub-parser here; keeping the list in one place
shows what the core offers.
"""

from __future__ import annotations

from typing import Any


def add_core_commands(subparsers: Any) -> None:
    """Register the core commands that live outside cli.py."""
