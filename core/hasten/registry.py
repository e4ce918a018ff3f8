"""Named component registries: datasets, models, tasks, schedules.

Built-ins register here at import time; plugins add their own through the
``hasten_register(registry)`` hook. A lookup of an unknown name raises a
:class:`~hasten.errors.UserError` that lists the registered names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from hasten.errors import UserError, did_you_mean

T = TypeVar("T", bound=Callable[..., Any])


class Catalog(Generic[T]):
    """A name -> factory table for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, factory: T, *, replace: bool = False) -> T:
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = factory
        return factory

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(factory: T) -> T:
            return self.add(name, factory)

        return decorate

    def get(self, name: str, *, key: str | None = None) -> T:
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

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


class Registry:
    """All component catalogs, handed to ``hasten_register``."""

    def __init__(self) -> None:
        self.datasets: Catalog[Callable[..., Any]] = Catalog("dataset")
        self.models: Catalog[Callable[..., Any]] = Catalog("model")
        self.tasks: Catalog[Callable[..., Any]] = Catalog("task")
        self.schedules: Catalog[Callable[..., Any]] = Catalog("schedule")


#: The process-wide registry; built-ins fill it when :mod:`hasten` is imported.
REGISTRY = Registry()
