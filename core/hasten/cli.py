"""The ``hasten`` command line.

Core commands: ``train``, ``plugins``, ``schema``, ``config``. Installed plugins add more
through the ``hasten_add_commands`` hook (f1clr adds ``lr-find``). A user
error prints one message naming what is wrong and exits 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hasten.errors import TrainingStopped, UserError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG and ``--set`` for every command that reads a config."""
    parser.add_argument("config", help="YAML or TOML config file")
    add_override_argument(parser)


def add_override_argument(
    parser: argparse.ArgumentParser, help: str = "override a config value, e.g. --set optim.lr=0.2 (repeatable)"
) -> None:
    """``--set KEY=VALUE`` (repeatable, into ``args.overrides``): the one declaration of config overrides."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def cmd_train(args: argparse.Namespace) -> int:
    from hasten.config import load_config
    from hasten.engine import train

    config = load_config(args.config, args.overrides)
    resume: bool | str = args.resume if args.resume is not None else False
    if args.resume_allow_nonfinite and args.resume is None:
        raise UserError("--resume-allow-nonfinite: only with --resume (it loads a checkpoint holding NaN/inf anyway)")
    result = train(config, resume=resume, quiet=args.quiet, allow_nonfinite_resume=args.resume_allow_nonfinite)
    return 0 if result.stop_reason is None else 1


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


def cmd_config(args: argparse.Namespace) -> int:
    print(resolved_config_yaml(args.config, args.overrides), end="")
    return 0


def resolved_config_yaml(path: str, overrides: list[str]) -> str:
    """The config as a run would use it: every default filled in, plugin
    settings validated and completed by each plugin's ``Settings`` (YAML)."""
    import yaml

    from hasten.config import load_config
    from hasten.plugins import validate_plugin_settings

    config = load_config(path, overrides)
    data = config.model_dump(mode="json")
    for plugin_class, settings in validate_plugin_settings(config):
        data["plugins"][plugin_class.name] = settings.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_schema(), indent=2))
    return 0


def config_schema() -> dict[str, Any]:
    """JSON Schema of the whole config, with every installed plugin's settings and the options
    of every component (core and plugins'), discriminated by the chosen name."""
    from hasten import __version__
    from hasten.builtins.components import discover_components
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


def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
    from hasten import __version__
    from hasten.plugins import add_plugin_commands

    parser = argparse.ArgumentParser(
        prog="hasten", description="Plugin-based PyTorch trainer: the same accuracy for less compute."
    )
    parser.add_argument("--version", action="version", version=f"hasten {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a model from a config file")
    add_config_arguments(train)
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="RUN_DIR",
        help="continue from the latest valid checkpoint (of RUN_DIR, run.run_dir, or the newest run of this name)",
    )
    train.add_argument(
        "--quiet", action="store_true",
        help="no progress display and no printed summary (RUN_DIR/summary.json and metrics.jsonl are written anyway)",
    )
    train.add_argument(
        "--resume-allow-nonfinite",
        action="store_true",
        help="with --resume: load the checkpoint even if it holds NaN or inf tensors (refused by default)",
    )
    train.set_defaults(handler=cmd_train)

    plugins = sub.add_parser("plugins", help="list installed plugins, their hooks and settings")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=cmd_plugins)

    schema = sub.add_parser("schema", help="print the JSON Schema of the config, plugins included")
    schema.set_defaults(handler=cmd_schema)

    config = sub.add_parser(
        "config", help="print the fully resolved config (every default, plugin settings included) as YAML"
    )
    add_config_arguments(config)
    config.set_defaults(handler=cmd_config)

    from hasten.builtins import commands

    commands.add_core_commands(sub)
    problems = add_plugin_commands(sub)
    return parser, problems


def main(argv: list[str] | None = None) -> int:
    parser, problems = build_parser()
    args = parser.parse_args(argv)
    for problem in problems:
        print(f"warning: plugin failed to load: {problem}", file=sys.stderr)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TrainingStopped as exc:
        print(f"training stopped: {exc}", file=sys.stderr)
        return exc.exit_code  # 1; 128 + signal number after SIGINT/SIGTERM (TrainingInterrupted)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
