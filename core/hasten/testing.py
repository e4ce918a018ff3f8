"""Helpers for the tests of hasten and of its plugins: runs that train in seconds.

Plugin test suites build their tiny configs with :func:`tiny_config_dict`,
passing only what differs from the core's defaults, so every suite shares one
definition of "a tiny run".
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hasten.config import Config
    from hasten.plugins import Plugin


def tiny_config_dict(
    tmp_path: Path, defaults: dict[str, Any] | None = None, **sections: Any
) -> dict[str, Any]:
    """A few steps of a small ResNet on 16 px procedural images, tracking and progress off.

    ``defaults`` (a suite's own baseline) and then ``sections`` (a test's
    changes) are applied per section: a dict updates that section's keys, any
    other value replaces the section.
    """
    base: dict[str, Any] = {
        "run": {"name": "t", "seed": 0, "max_steps": 6, "log_every": 2, "run_dir": str(tmp_path / "run"),
                "progress": False},
        "data": {"dataset": "procedural", "resolution": 16, "batch_size": 16,
                 "options": {"train_size": 256, "val_size": 64, "unlabeled_size": 64}},
        "model": {"name": "small_resnet", "options": {"width": 8}},
        "optim": {"lr": 0.05},
        "eval": {"batch_size": 64},
        "tracking": {"enabled": False},
    }
    for layer in (copy.deepcopy(defaults or {}), sections):
        for name, values in layer.items():
            if isinstance(values, dict):
                base.setdefault(name, {}).update(values)
            else:
                base[name] = values
    return base


def config_maker(
    directory: Path | Callable[[], Path], defaults: dict[str, Any] | None = None
) -> Callable[..., Config]:
    """``make(**sections) -> Config`` for tiny runs; ``directory`` is a folder, or a
    callable giving a fresh folder per config (runs must not share a run directory)."""
    from hasten.config import validate_config

    def make(**sections: Any) -> Config:
        folder = directory() if callable(directory) else directory
        return validate_config(tiny_config_dict(folder, defaults, **sections))

    return make


@contextmanager
def plugin_available(plugin_class: type[Plugin]) -> Iterator[None]:
    """Make ``plugin_class`` usable in configs whether or not its distribution is
    installed (tests run from a source tree register it in code)."""
    from hasten.plugins import installed_plugins, register_plugin, unregister_plugin

    found = installed_plugins().get(plugin_class.name)
    if found is not None and found.plugin_class is not None:
        yield
        return
    register_plugin(plugin_class)
    try:
        yield
    finally:
        unregister_plugin(plugin_class.name)
