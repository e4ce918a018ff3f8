"""Fixtures of the hardaug tests: tiny SSL runs on procedural images (core + this plugin only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def ssl_config_dict(tmp_path: Path, method: str = "simsiam", steps: int = 3, **sections: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"method": method, "knn_k": 20, "knn_bank_size": 128}
    if method == "mocov2plus":
        options["queue_size"] = 128
    if method == "dino":
        options["out_dim"] = 256
    base: dict[str, Any] = {
        "run": {"name": "t", "seed": 0, "max_steps": steps, "log_every": 1, "run_dir": str(tmp_path / "run"),
                "progress": False},
        "data": {"dataset": "procedural", "resolution": 16, "batch_size": 8,
                 "options": {"train_size": 128, "val_size": 32}},
        "model": {"name": "small_resnet", "options": {"width": 8}},
        "task": {"name": "ssl", "options": options},
        "optim": {"lr": 0.05},
        "eval": {"batch_size": 128},
        "tracking": {"enabled": False},
        "plugins": {"hardaug": {"num_views": 4, "selection_resolution": 8}},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(base.get(name), dict):
            base[name].update(values)
        else:
            base[name] = values
    return base


@pytest.fixture
def hardaug_plugin():
    """The plugin, registered in code when the distribution is not installed (plain PYTHONPATH runs)."""
    from hasten.plugins import installed_plugins, register_plugin, unregister_plugin
    from hasten_hardaug.plugin import HardAugment

    installed = "hardaug" in installed_plugins()
    if not installed:
        register_plugin(HardAugment)
    yield HardAugment
    if not installed:
        unregister_plugin("hardaug")


@pytest.fixture
def ssl_config(tmp_path: Path, hardaug_plugin):
    from hasten.config import validate_config

    def make(method: str = "simsiam", steps: int = 3, **sections: Any):
        return validate_config(ssl_config_dict(tmp_path, method, steps, **sections))

    return make
