"""Core CLI commands beyond train/plugins/schema (estimate, compare, ...).

Each command module adds its sub-parser here; keeping the list in one place
shows what the core offers.
"""

from __future__ import annotations

from typing import Any


def add_core_commands(subparsers: Any) -> None:
    """Register the core commands that live outside cli.py."""
    from hasten.builtins import compare, components, estimate, sweep, tracking

    components.add_components_command(subparsers)
    estimate.add_estimate_command(subparsers)
    compare.add_compare_command(subparsers)
    sweep.add_sweep_command(subparsers)
    tracking.add_sync_command(subparsers)
    from hasten.builtins import linear_probe

    linear_probe.add_linear_probe_command(subparsers)
