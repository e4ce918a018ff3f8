"""The command-line arguments every command that reads a config shares (core and plugin commands)."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG and ``--set`` for every command that reads a config."""
    parser.add_argument("config", help="YAML or TOML config file")
    add_override_argument(parser)


def add_override_argument(
    parser: argparse.ArgumentParser, help: str = "override a config value, e.g. --set optim.lr=0.2 (repeatable)"
) -> None:
    """``--set KEY=VALUE`` (repeatable, into ``args.overrides``): the one declaration of config overrides."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)
