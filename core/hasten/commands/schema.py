"""``hasten schema``: the JSON Schema of the config, every installed plugin's settings and component included."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_schema(), indent=2))
    return 0


def config_schema() -> dict[str, Any]:
    """JSON Schema of the whole config, with every installed plugin's settings and the options
    of every component (core and plugins'), discriminated by the chosen name."""
    from hasten import __version__
    from hasten.commands.components import discover_components
    from hasten.config import Config
    from hasten.plugins import installed_plugins

    schema = {"$schema": SCHEMA_DIALECT, "$id": schema_id(__version__), **Config.model_json_schema()}
    discover_components()[0].add_to_schema(schema)
    plugin_props: dict[str, Any] = {}
    for name, info in sorted(installed_plugins().items()):
        if info.plugin_class is not None:
            sub = info.plugin_class.Settings.model_json_schema()
            sub.setdefault("description", (info.plugin_class.__doc__ or "").strip().split("\n")[0])
            plugin_props[name] = {"anyOf": [sub, {"type": "null"}]}
    schema["properties"]["plugins"] = {
        "type": "object",
        "description": "enabled plugins, in call order: name -> settings",
        "properties": plugin_props,
        "additionalProperties": False,
    }
    return schema


#: the JSON Schema dialect of ``hasten schema`` (pydantic's output: ``$defs``, ``const``)
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_id(version: str) -> str:
    """The ``$id`` of ``hasten schema``'s output: names the schema and its hasten version."""
    return f"urn:hasten:config-schema:{version}"


def add_command(subparsers: Any) -> None:
    schema = subparsers.add_parser("schema", help="print the JSON Schema of the config, plugins included")
    schema.set_defaults(handler=cmd_schema)
