"""Fixtures for the f1clr tests: tiny runs that train in seconds; the plugin is found
through its entry point when installed (tox -e f1clr), else registered in code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hasten.plugins import installed_plugins, register_plugin
from hasten_f1clr.plugin import F1CLR

REPO = Path(__file__).resolve().parents[3]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

if "f1clr" not in installed_plugins():
    register_plugin(F1CLR)


def tiny_config_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A run of a few steps on small procedural images, tracking off."""
    base: dict[str, Any] = {
        "run": {"name": "t", "seed": 0, "max_steps": 6, "log_every": 2, "run_dir": str(tmp_path / "run"),
                "progress": False},
        "data": {"dataset": "procedural", "resolution": 16, "batch_size": 16,
                 "options": {"train_size": 256, "val_size": 64, "unlabeled_size": 64}},
        "model": {"name": "small_resnet", "options": {"width": 8}},
        "optim": {"lr": 0.05},
        "eval": {"batch_size": 64, "every_steps": 1000},
        "tracking": {"enabled": False},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            base.setdefault(name, {}).update(values)
        else:
            base[name] = values
    return base


@pytest.fixture
def tiny_config(tmp_path: Path):
    from hasten.config import validate_config

    def make(**sections: Any):
        return validate_config(tiny_config_dict(tmp_path, **sections))

    return make
