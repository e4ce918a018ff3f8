"""Fixtures for the cooldown plugin's tests: tiny runs (seconds on 2 CPU cores), no other plugin needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_config_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A few steps of a small ResNet on procedural 16 px images, tracking off."""
    base: dict[str, Any] = {
        "run": {"name": "t", "seed": 0, "max_steps": 8, "log_every": 2, "run_dir": str(tmp_path / "run"),
                "progress": False},
        "data": {"dataset": "procedural", "resolution": 16, "batch_size": 16,
                 "options": {"train_size": 256, "val_size": 64}},
        "model": {"name": "small_resnet", "options": {"width": 8}},
        "optim": {"lr": 0.05},
        "eval": {"batch_size": 64, "every_steps": 1000},
        "tracking": {"enabled": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


@pytest.fixture
def tiny_config(tmp_path: Path):
    from hasten.config import validate_config

    def make(**sections: Any):
        return validate_config(tiny_config_dict(tmp_path, **sections))

    return make


@pytest.fixture(scope="module")
def module_config(tmp_path_factory):
    """Like ``tiny_config``, for module-scoped runs shared by several tests."""
    from hasten.config import validate_config

    def make(**sections: Any):
        return validate_config(tiny_config_dict(tmp_path_factory.mktemp("run"), **sections))

    return make


@pytest.fixture(scope="session", autouse=True)
def cooldown_registered():
    """Make ``cooldown`` available whether or not the distribution is installed (PYTHONPATH runs)."""
    from hasten.plugins import installed_plugins, register_plugin, unregister_plugin
    from hasten_cooldown.plugin import Cooldown

    already = installed_plugins().get("cooldown")
    if already is None or already.plugin_class is None:
        register_plugin(Cooldown)
        yield
        unregister_plugin("cooldown")
    else:
        yield
