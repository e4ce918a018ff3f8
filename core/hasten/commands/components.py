"""``hasten components [--json]``: every dataset, model, task, schedule and optimizer with its options.

The core's components and those every installed plugin registers (its
``hasten_register`` is called on a copy of the registry, with no settings:
a plugin registers the same components whatever its settings), each with the
distribution that registered it. ``hasten schema`` uses the same discovery.
"""

from __future__ import annotations

import json
from typing import Any

from hasten.registry import REGISTRY, Registry


def discover_components(registry: Registry | None = None) -> tuple[Registry, list[str]]:
    """A copy of ``registry`` (default: the core's) plus every installed plugin's components,
    and the plugins whose registration failed (one line each)."""
    from hasten.plugins import installed_plugins

    found = (registry or REGISTRY).copy()
    problems: list[str] = []
    for name, info in sorted(installed_plugins().items()):
        if info.plugin_class is None or "hasten_register" not in info.hooks:
            continue
        before = {kind: {n: catalog.get(n) for n in catalog} for kind, catalog in found.catalogs().items()}
        plugin: Any = info.plugin_class.__new__(info.plugin_class)  # no settings: registration must not need them
        try:
            plugin.hasten_register(registry=found)
        except Exception as exc:
            problems.append(f"{name} ({info.distribution}): hasten_register failed: {type(exc).__name__}: {exc}")
            continue
        for kind, catalog in found.catalogs().items():
            for added in [n for n in catalog if catalog.get(n) is not before[kind].get(n)]:  # new or replaced
                catalog.attribute(added, info.distribution)
    return found, problems


def check_optimizer_name(config: Any) -> None:
    """Refuse an unknown ``optim.name`` (the core's and installed plugins' optimizers) before any work:
    for commands that read configs without building a run first (``hasten config``, ``hasten sweep``)."""
    discover_components()[0].optimizers.get(config.optim.name, key="optim.name")


def component_rows(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """kind -> one row per component: name, distribution, summary, options (name, type, default, description)."""
    return {
        kind: [
            {
                "name": c.name,
                "distribution": c.distribution,
                "summary": c.summary,
                "options_declared": c.options is not None,
                "options": c.option_rows(),
            }
            for c in catalog.components()
        ]
        for kind, catalog in registry.catalogs().items()
    }


def cmd_components(args: Any) -> int:
    import sys

    registry, problems = discover_components()
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    rows = component_rows(registry)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    notes = {"schedules": "options: none (the schedule section's warmup_steps, warmup_fraction, final_lr apply)",
             "optimizers": "options: none (the optim section's lr, momentum, nesterov, weight_decay, betas apply)"}
    for kind, components in rows.items():
        print(kind)
        for row in components:
            summary = f"  {row['summary']}" if row["summary"] else ""
            print(f"  {row['name']}  ({row['distribution']}){summary}")
            if not row["options_declared"]:
                print(f"    {notes.get(kind, 'options: not declared (a free mapping)')}")
            for option in row["options"]:
                default = "(required)" if option["required"] else repr(option["default"])
                text = f"  {option['description']}" if option["description"] else ""
                print(f"    {option['name']}: {option['type']} = {default}{text}")
    return 0


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "components", help="list datasets, models, tasks, schedules and optimizers with their options and distribution"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=cmd_components)
