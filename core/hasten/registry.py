"""Named component registries: datasets, models, tasks, schedules, optimizers.

Built-ins register here at import time; plugins add their own through the
``hasten_register(registry)`` hook. A lookup of an unknown name raises a
:class:`~hasten.errors.UserError` that lists the registered names.

A component declares its options as a pydantic model (subclass
:class:`Options`: unknown keys are errors, every field has a default and a
description)::

    class NoiseOptions(hasten.Options):
        size: int = Field(1000, ge=1, description="samples per split")

    registry.datasets.add("noise", build_noise, options=NoiseOptions)

The config validates ``data.options`` / ``model.options`` / ``task.options``
against the chosen component's model before anything is built, so an error
names the full key path and the allowed keys; the factory then receives the
validated model instance as ``options=`` (datasets, models). A task declares
its model as the class attribute ``Task.Options`` and reads ``self.options``.
``hasten schema`` and ``hasten components`` show every option with its
default and description.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata as metadata
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from hasten.errors import UserError, did_you_mean


class Options(BaseModel):
    """Base class of a component's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Component:
    """One registered component: its factory, its options model, where it comes from.

    Calling it builds the component. For datasets and models the keyword
    arguments are the catalog's fixed ones (``split``, ``resolution``, ...)
    plus the raw options, which are validated first; :meth:`build` does the
    same with the options as one mapping and a config path for the messages.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    #: the options model; None: a plugin's component that declares none (a free mapping, passed as keywords)
    options: type[BaseModel] | None
    #: the keyword arguments the caller supplies besides the options; None: the factory takes no options
    #: (tasks read ``task.options`` themselves, schedules have none)
    fixed: tuple[str, ...] | None
    #: the config path of the options, for messages (``data.options``)
    options_key: str
    #: the distribution of the plugin that registered it, when known (``hasten components``)
    registered_by: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fixed is None:
            return self.factory(*args, **kwargs)
        fixed = {k: kwargs.pop(k) for k in self.fixed if k in kwargs}
        return self.build(kwargs, *args, **fixed)

    def build(self, options: Mapping[str, Any] | None, *args: Any, key: str | None = None, **fixed: Any) -> Any:
        """Validate ``options`` (``key``: their config path, e.g. ``data.options``) and call the factory."""
        if self.options is None:
            return self.factory(*args, **fixed, **dict(options or {}))
        return self.factory(*args, **fixed, options=self.validate(options, key=key))

    def validate(self, options: Mapping[str, Any] | None, *, key: str | None = None) -> Any:
        """The validated options model (the mapping itself when none is declared); UserError naming
        ``key.<option>``, what is wrong and the allowed keys."""
        raw = dict(options or {})
        if self.options is None:
            return raw
        try:
            return self.options.model_validate(raw)
        except ValidationError as exc:
            from hasten.config import format_validation_error

            where = key or self.options_key
            message = format_validation_error(exc, raw, prefix=where, model=self.options)
            raise UserError(f"{message}\n  ({where}: the options of {self.kind} {self.name!r}; "
                            "`hasten components` lists them)") from None

    @property
    def summary(self) -> str:
        """The first line of the factory's docstring."""
        doc = (getattr(self.factory, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def distribution(self) -> str:
        """The distribution that registered the component: ``hasten`` for the core, else the plugin's."""
        return self.registered_by or distribution_of(getattr(self.factory, "__module__", None))

    def option_rows(self) -> list[dict[str, Any]]:
        """Each option: name, type, default, description (for ``hasten components``)."""
        if self.options is None:
            return []
        rows = []
        for field, spec in self.options.model_fields.items():
            rows.append({
                "name": field,
                "type": type_text(spec.annotation),
                "default": None if spec.is_required() else spec.get_default(call_default_factory=True),
                "required": spec.is_required(),
                "description": spec.description or "",
            })
        return rows


def type_text(annotation: Any) -> str:
    """A short, readable form of a type annotation: ``list[int] | None``, ``'random' | 'fixed'``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


@functools.cache
def _distributions_by_package() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def distribution_of(module: str | None) -> str:
    """The installed distribution holding ``module``; for a module no installed distribution
    holds (a plugin run from a source tree, a test), ``(module <name>)``."""
    top = (module or "").partition(".")[0]
    if top == "hasten":
        return "hasten"
    names = _distributions_by_package().get(top) if top else None
    return names[0] if names else f"(module {module or '?'})"


class Catalog:
    """A name -> :class:`Component` table for one kind of component."""

    def __init__(self, kind: str, options_key: str, fixed: tuple[str, ...] | None = None) -> None:
        self.kind = kind
        self.options_key = options_key
        self.fixed = fixed
        self._items: dict[str, Component] = {}

    def add(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        options: type[BaseModel] | None = None,
        replace: bool = False,
    ) -> Callable[..., Any]:
        """Register ``factory`` under ``name`` (returned unchanged, for decorators).

        ``options``: the options model; a task class's defaults to its ``Options`` attribute.
        """
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if options is None:
            declared = getattr(factory, "Options", None)
            if isinstance(declared, type) and issubclass(declared, BaseModel):
                options = declared
        self._items[name] = Component(self.kind, name, factory, options, self.fixed, self.options_key)
        return factory

    def register(self, name: str, *, options: type[BaseModel] | None = None) -> Callable[[Any], Any]:
        """Decorator form of :meth:`add`."""

        def decorate(factory: Any) -> Any:
            return self.add(name, factory, options=options)

        return decorate

    def get(self, name: str, *, key: str | None = None) -> Component:
        """The component ``name`` (callable: it builds); ``key`` (a config path) prefixes the error."""
        try:
            return self._items[name]
        except KeyError:
            where = f"{key}: " if key else ""
            raise UserError(
                f"{where}unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; "
                f"allowed: {', '.join(sorted(self._items)) or '(none registered)'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def components(self) -> list[Component]:
        return [self._items[n] for n in sorted(self._items)]

    def remove(self, name: str) -> None:
        """Unregister ``name`` (tests, notebooks)."""
        self._items.pop(name, None)

    def attribute(self, name: str, distribution: str) -> None:
        """Record that ``distribution`` registered ``name``."""
        self._items[name] = dataclasses.replace(self._items[name], registered_by=distribution)

    def copy(self) -> Catalog:
        other = Catalog(self.kind, self.options_key, self.fixed)
        other._items = dict(self._items)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


class Registry:
    """All component catalogs, handed to ``hasten_register``."""

    def __init__(self) -> None:
        self.datasets = Catalog("dataset", "data.options", fixed=("split", "resolution", "seed", "path"))
        self.models = Catalog("model", "model.options", fixed=("num_classes", "in_channels"))
        self.tasks = Catalog("task", "task.options")
        self.schedules = Catalog("schedule", "schedule")
        #: factory(params, optim section) -> torch.optim.Optimizer (:mod:`hasten.optim`)
        self.optimizers = Catalog("optimizer", "optim")

    def catalogs(self) -> dict[str, Catalog]:
        return {"datasets": self.datasets, "models": self.models, "tasks": self.tasks, "schedules": self.schedules,
                "optimizers": self.optimizers}

    def copy(self) -> Registry:
        """An independent registry with the same components (to add plugins' without touching this one)."""
        other = Registry()
        other.datasets, other.models = self.datasets.copy(), self.models.copy()
        other.tasks, other.schedules = self.tasks.copy(), self.schedules.copy()
        other.optimizers = self.optimizers.copy()
        return other

    def add_to_schema(self, schema: dict[str, Any]) -> None:
        """Make the config's JSON Schema ``schema`` (pydantic's, with ``$defs``) discriminated: the
        ``options`` of data, data.unlabeled, model and task are those of the chosen component
        (``if`` name ``then`` options), and the names are the registered ones."""
        defs = schema.setdefault("$defs", {})
        sections = (
            ("DataConfig", "dataset", self.datasets, True),
            ("UnlabeledConfig", "dataset", self.datasets, False),
            ("ModelConfig", "name", self.models, True),
            ("TaskConfig", "name", self.tasks, True),
        )
        for section, key, catalog, has_default in sections:
            target = defs.get(section)
            if target is None:
                continue
            props = target.setdefault("properties", {})
            default = props.get(key, {}).get("default") if has_default else None
            names = catalog.names()
            choice = {k: v for k, v in props.get(key, {}).items() if k in ("title", "description", "default")}
            choice["enum"] = [*names, None] if not has_default else names
            props[key] = choice
            branches = []
            for component in catalog.components():
                ref = self._options_def(defs, component)
                condition: dict[str, Any] = {"properties": {key: {"const": component.name}}}
                if component.name != default:  # an absent name means the default component
                    condition["required"] = [key]
                branches.append({"if": condition, "then": {"properties": {"options": ref}}})
            target["allOf"] = branches

    @staticmethod
    def _options_def(defs: dict[str, Any], component: Component) -> dict[str, Any]:
        if component.options is None:
            return {"type": "object", "description": f"options of {component.kind} {component.name!r} (not declared)"}
        name = f"{component.kind}.{component.name}.options"
        sub = component.options.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        sub.setdefault("description", f"options of {component.kind} {component.name!r}")
        defs[name] = sub
        return {"$ref": f"#/$defs/{name}"}


#: The process-wide registry; built-ins fill it when :mod:`hasten` is imported.
REGISTRY = Registry()
