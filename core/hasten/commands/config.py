"""``hasten config CONFIG [--set ...]``: the fully resolved config, as a run would use it (YAML)."""

from __future__ import annotations

import argparse
from typing import Any

from hasten.commands.arguments import add_config_arguments


def cmd_config(args: argparse.Namespace) -> int:
    print(resolved_config_yaml(args.config, args.overrides), end="")
    return 0


def resolved_config_yaml(path: str, overrides: list[str]) -> str:
    """The config as a run would use it: every default filled in, plugin
    settings validated and completed by each plugin's ``Settings`` (YAML)."""
    import yaml

    from hasten.commands.components import check_optimizer_name
    from hasten.config import load_config
    from hasten.plugins import validate_plugin_settings

    config = load_config(path, overrides)
    check_optimizer_name(config)
    data = config.model_dump(mode="json")
    for plugin_class, settings in validate_plugin_settings(config):
        data["plugins"][plugin_class.name] = settings.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)


def add_command(subparsers: Any) -> None:
    config = subparsers.add_parser(
        "config", help="print the fully resolved config (every default, plugin settings included) as YAML"
    )
    add_config_arguments(config)
    config.set_defaults(handler=cmd_config)
