"""Plugin discovery, settings validation and the per-run plugin manager.

A plugin is a subclass of :class:`Plugin` exposed through the entry-point
group ``hasten.plugins`` (or registered in code with :func:`register_plugin`)::

    [project.entry-points."hasten.plugins"]
    f1clr = "hasten_f1clr.plugin:F1CLR"

It declares a pydantic ``Settings`` model and implements hooks from
:mod:`hasten.hookspecs` as methods marked with ``@hasten.hookimpl``. A config
enables it by name under ``plugins:``; the engine builds one instance per run
with the validated settings.
"""

from __future__ import annotations

import importlib.metadata as metadata
import inspect
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pluggy
from pydantic import BaseModel, ConfigDict, ValidationError

from hasten import hookspecs
from hasten.config import Config, format_validation_error
from hasten.errors import UserError, closest, did_you_mean

ENTRY_POINT_GROUP = "hasten.plugins"


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Plugin:
    """Base class of every plugin (built-in or installed).

    Class attributes:
      name: the name configs use under ``plugins:``.
      Settings: pydantic model of the settings (``extra="forbid"`` advised).
      requires: plugin names that must be enabled too.
      conflicts: plugin names that must not be enabled together with this one.
      provides: capabilities this plugin owns exclusively, e.g. ``"lr_schedule"``
        or ``"resolution_schedule"``; two enabled plugins providing the same
        capability are a configuration error.
      metrics: evaluation metrics it produces (valid ``eval.metric`` values).
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type[BaseModel]] = NoSettings
    requires: ClassVar[tuple[str, ...]] = ()
    conflicts: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    #: metrics this plugin adds to the evaluation (``hasten_evaluate``), valid values of eval.metric
    metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: BaseModel | None = None) -> None:
        self.settings: Any = settings if settings is not None else self.Settings()


@dataclass
class PluginInfo:
    """An installed plugin, or one that failed to load."""

    name: str
    plugin_class: type[Plugin] | None
    distribution: str
    version: str
    error: str | None = None

    @property
    def hooks(self) -> list[str]:
        """The hook specifications this plugin implements (never a name that matches no spec)."""
        if self.plugin_class is None:
            return []
        known = hook_names()
        return sorted(
            n for n, v in inspect.getmembers(self.plugin_class)
            if n in known and hasattr(v, f"{hookspecs.PROJECT}_impl")
        )


def hook_names() -> frozenset[str]:
    """Every hook specified in :mod:`hasten.hookspecs`."""
    return frozenset(n for n, v in vars(hookspecs).items() if hasattr(v, f"{hookspecs.PROJECT}_spec"))


def hook_problems(plugin: type | object) -> list[str]:
    """What is wrong with the ``hasten_*`` methods of a plugin (class or instance), as sentences.

    A method named like a hook that matches no specification (a typo such as
    ``hasten_step_begin``) would never be called, and a specified hook left
    unmarked would never be called either: both are refused when plugins load.
    """
    known = hook_names()
    problems = []
    for attr, value in inspect.getmembers(plugin):
        if not attr.startswith("hasten_") or not callable(value):
            continue
        if attr not in known:
            problems.append(f"{attr} matches no hook specification (hooks: see hasten.hookspecs)")
        elif not hasattr(value, f"{hookspecs.PROJECT}_impl"):
            problems.append(f"{attr} is not marked @hasten.hookimpl, so it would never be called")
    return problems


def register_checked(manager: pluggy.PluginManager, plugin: object, name: str, distribution: str) -> None:
    """Register ``plugin`` under ``name``; a wrong hook name or signature is a :class:`UserError`.

    pluggy validates each implementation's arguments against its spec when it
    is registered (``PluginValidationError``) and reports unknown hooks only in
    ``check_pending``; both come back here naming the plugin, its distribution
    and the hook.
    """
    where = f"plugin {name!r} (distribution {distribution})"
    problems = hook_problems(plugin)
    if problems:
        raise UserError(f"plugins.{name}: {where}: " + "; ".join(problems))
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise UserError(f"plugins.{name}: {where}: {_validation_text(exc)}") from None


def _validation_text(exc: pluggy.PluginValidationError) -> str:
    """pluggy's message without its object reprs (the plugin is named already)."""
    text = str(exc)
    match = re.search(r"hook '?(hasten_\w+)'?", text)
    hook = match.group(1) if match else "a hook"
    if "argument" in text.lower():
        found = re.search(r"\{(.*?)\}", text)
        extra = f" ({found.group(1)})" if found else ""
        spec = getattr(hookspecs, hook, None)
        allowed = ", ".join(inspect.signature(spec).parameters) if spec is not None else "?"
        return f"{hook} takes arguments its specification does not have{extra}; allowed: {allowed}"
    return f"{hook}: {text}"


_IN_CODE: dict[str, PluginInfo] = {}


def register_plugin(plugin_class: type[Plugin], *, distribution: str = "(registered in code)") -> None:
    """Make a plugin class available without an entry point (tests, notebooks)."""
    _IN_CODE[plugin_class.name] = PluginInfo(plugin_class.name, plugin_class, distribution, "-")


def unregister_plugin(name: str) -> None:
    _IN_CODE.pop(name, None)


def installed_plugins() -> dict[str, PluginInfo]:
    """Every plugin found through entry points (and in code), by name.

    A plugin whose import fails is returned with ``error`` set instead of
    raising, so one broken package does not take the others down.
    """
    found: dict[str, PluginInfo] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        try:
            obj = ep.load()
            if not (inspect.isclass(obj) and issubclass(obj, Plugin)):
                raise TypeError(f"entry point {ep.value!r} is not a hasten.Plugin subclass")
            if obj.name != ep.name:
                raise TypeError(f"entry point name {ep.name!r} differs from {obj.__name__}.name {obj.name!r}")
            found[ep.name] = PluginInfo(ep.name, obj, dist, version)
        except Exception as exc:
            found[ep.name] = PluginInfo(ep.name, None, dist, version, f"{type(exc).__name__}: {exc}")
    found.update(_IN_CODE)
    return found


#: plugins published from this repository: the only names an install hint
#: may name (a hint built from a typo would invite a typo-squatted package)
PUBLISHED_PLUGINS = {
    "f1clr": "hasten-f1clr",
    "progressive": "hasten-progressive",
    "hardaug": "hasten-hardaug",
    "selection": "hasten-selection",
    "cooldown": "hasten-cooldown",
    "ubn": "hasten-ubn",
}


def unknown_plugin_message(name: str, infos: dict[str, PluginInfo]) -> str:
    """``plugins.<name>`` is not installed: suggest the closest installed or
    published plugin; an install command only for a published one."""
    usable = sorted(n for n, i in infos.items() if i.error is None)
    text = f"plugins.{name}: no plugin named {name!r} is installed"
    if name in PUBLISHED_PLUGINS:
        text += f"; install it with `pip install {PUBLISHED_PLUGINS[name]}`"
    else:
        hint = did_you_mean(name, usable)
        if hint:
            text += hint
        else:
            published = closest(name, [n for n in PUBLISHED_PLUGINS if n not in infos])
            if published is not None:
                text += f" (did you mean {published!r}? install it with `pip install {PUBLISHED_PLUGINS[published]}`)"
    return f"{text}; installed: {', '.join(usable) or 'none'}"


class PluginSet:
    """The plugins of one run: validated instances plus the pluggy manager."""

    def __init__(self, manager: pluggy.PluginManager, enabled: list[Plugin], infos: dict[str, PluginInfo]):
        self.manager = manager
        self.enabled = enabled
        self.infos = infos

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def versions(self) -> dict[str, str]:
        return {p.name: self.infos[p.name].version for p in self.enabled if p.name in self.infos}

    def get(self, name: str) -> Plugin | None:
        return next((p for p in self.enabled if p.name == name), None)

    def implemented_by_plugins(self, hook: str) -> list[str]:
        """The enabled plugins (not built-ins) implementing ``hook``, in call order."""
        names = {p.name for p in self.enabled}
        impls = getattr(self.manager.hook, hook).get_hookimpls()
        return [impl.plugin_name for impl in reversed(impls) if impl.plugin_name in names]

    @classmethod
    def build(cls, config: Config, builtins: Iterable[object] = ()) -> PluginSet:
        """Validate ``config.plugins`` and register built-ins and plugins.

        Raises :class:`UserError` for an unknown plugin (listing the installed
        ones), a plugin that failed to import, invalid settings (naming
        ``plugins.<name>.<key>``), a missing requirement or a conflict.
        """
        infos = installed_plugins()
        enabled = [plugin_class(settings) for plugin_class, settings in validate_plugin_settings(config, infos)]
        _check_relations(enabled)

        manager = new_manager()
        # pluggy calls the last registered first (within tryfirst / unmarked / trylast): register the
        # built-ins in reverse, then the plugins in reverse, so each group runs in the order given
        # (built-ins as listed, plugins as the config lists them). The rule: hasten.hookspecs.
        for builtin in reversed(list(builtins)):
            register_checked(manager, builtin, f"builtin:{type(builtin).__name__}", "hasten")
        for plugin in reversed(enabled):
            register_checked(manager, plugin, plugin.name, infos[plugin.name].distribution)
        manager.check_pending()  # nothing left to find after register_checked; pluggy's own net
        return cls(manager, enabled, infos)


def validate_plugin_settings(
    config: Config, infos: dict[str, PluginInfo] | None = None
) -> list[tuple[type[Plugin], BaseModel]]:
    """(plugin class, validated settings) of every enabled plugin, in config order.

    Raises :class:`UserError` for an unknown plugin (suggesting the closest
    one), a plugin that failed to import, or invalid settings (naming
    ``plugins.<name>.<key>`` and the plugin's own keys).
    """
    infos = installed_plugins() if infos is None else infos
    found: list[tuple[type[Plugin], BaseModel]] = []
    for name in config.plugins:
        info = infos.get(name)
        if info is None:
            raise UserError(unknown_plugin_message(name, infos))
        if info.plugin_class is None:
            raise UserError(
                f"plugins.{name}: the plugin failed to load from distribution "
                f"{info.distribution} {info.version}: {info.error}"
            )
        raw = config.plugin_settings(name)
        model = info.plugin_class.Settings
        try:
            settings = model.model_validate(raw)
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, raw, prefix=f"plugins.{name}", model=model)) from None
        found.append((info.plugin_class, settings))
    return found


def _check_relations(enabled: list[Plugin]) -> None:
    names = {p.name for p in enabled}
    owners: dict[str, str] = {}
    for plugin in enabled:
        for needed in plugin.requires:
            if needed not in names:
                raise UserError(
                    f"plugins.{plugin.name}: requires plugin {needed!r}; add it under plugins:"
                )
        for other in plugin.conflicts:
            if other in names:
                raise UserError(f"plugins.{plugin.name}: conflicts with plugin {other!r}; enable only one")
        for capability in plugin.provides:
            if capability in owners:
                raise UserError(
                    f"plugins.{plugin.name}: both {owners[capability]!r} and {plugin.name!r} "
                    f"set the {capability.replace('_', ' ')}; enable only one"
                )
            owners[capability] = plugin.name


def provided_capabilities(plugins: Iterable[Plugin]) -> dict[str, str]:
    """capability -> plugin name, for the enabled plugins."""
    return {cap: p.name for p in plugins for cap in p.provides}


def new_manager() -> pluggy.PluginManager:
    """A plugin manager with hasten's hook specifications; ``HASTEN_TRACE_HOOKS=1`` traces every call."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_VARIABLE, "") not in ("", "0"):
        _trace_calls(manager)
    return manager


#: set to 1 to print every hook call (hook, implementations in call order, arguments' names) to stderr
TRACE_VARIABLE = "HASTEN_TRACE_HOOKS"


def _trace_calls(manager: pluggy.PluginManager) -> None:
    def before(hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        # pluggy calls the implementations from the end of the list
        order = " > ".join(impl.plugin_name for impl in reversed(hook_impls))
        step = getattr(kwargs.get("state"), "step", None)
        where = f" step {step}" if step is not None else ""
        print(f"hook {hook_name}{where}: {order or '(none)'}", file=sys.stderr, flush=True)

    def after(outcome: Any, hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        pass

    manager.add_hookcall_monitoring(before, after)


def add_commands(subparsers: Any, core: Sequence[object] = ()) -> list[str]:
    """Add the CLI commands: ``core``'s (objects implementing ``hasten_add_commands``, e.g.
    :class:`hasten.commands.CoreCommands`) and every installed plugin class's, through one call
    of the hook; returns plugin load errors."""
    manager = new_manager()
    for builtin in core:
        manager.register(builtin, name=f"cli:{getattr(builtin, 'name', type(builtin).__name__)}")
    problems = []
    for info in installed_plugins().values():
        if info.plugin_class is None:
            problems.append(f"{info.name} ({info.distribution}): {info.error}")
            continue
        if "hasten_add_commands" in info.hooks:
            try:
                register_checked(manager, info.plugin_class, f"cli:{info.name}", info.distribution)
            except UserError as exc:
                problems.append(f"{info.name} ({info.distribution}): {exc}")
                continue
    manager.hook.hasten_add_commands(subparsers=subparsers)
    return problems
