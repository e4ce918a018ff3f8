"""``hasten plugins [--json]``: installed plugins, their hooks, settings and capabilities."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_plugins(args: argparse.Namespace) -> int:
    from hasten.plugins import installed_plugins

    infos = installed_plugins()
    rows: list[dict[str, Any]] = []
    for name, info in sorted(infos.items()):
        row: dict[str, Any] = {
            "name": name,
            "distribution": info.distribution,
            "version": info.version,
            "hooks": info.hooks,
        }
        if info.plugin_class is None:
            row["error"] = info.error
        else:
            row["settings"] = {
                field: _default_value(spec)
                for field, spec in info.plugin_class.Settings.model_fields.items()
            }
            row["provides"] = list(info.plugin_class.provides)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no hasten plugins installed (pip install hasten-f1clr, hasten-selection, ...)")
        return 0
    for row in rows:
        print(f"{row['name']}  ({row['distribution']} {row['version']})")
        if "error" in row:
            print(f"  failed to load: {row['error']}")
            continue
        print(f"  hooks: {', '.join(h.removeprefix('hasten_') for h in row['hooks']) or '-'}")
        if row["provides"]:
            print(f"  provides: {', '.join(row['provides'])}")
        if row["settings"]:
            print("  settings:")
            for key, default in row["settings"].items():
                print(f"    {key} = {json.dumps(default)}")
    return 0


def _default_value(spec: Any) -> Any:
    """A setting's default as a JSON value (what a config would write), or "(required)"."""
    from pydantic import TypeAdapter

    if spec.is_required():
        return "(required)"
    default = spec.get_default(call_default_factory=True)
    return TypeAdapter(Any).dump_python(default, mode="json")


def add_command(subparsers: Any) -> None:
    plugins = subparsers.add_parser("plugins", help="list installed plugins, their hooks and settings")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=cmd_plugins)
