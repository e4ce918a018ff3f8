"""Fixtures for the ubn plugin's tests (core + this plugin only). The plugin is found
through its entry point when installed (tox -e ubn), else registered in code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hasten import testing
from hasten.plugins import installed_plugins, register_plugin
from hasten_ubn.plugin import UBN

# OMP_NUM_THREADS wins: on a shared machine oversubscribed threads spin and slow everything down.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))

if "ubn" not in installed_plugins():
    register_plugin(UBN)

REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("HASTEN_SHARED_DATA") or REPO.parent / "shared" / "datasets")


def spiral_config_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """The spiral study at CI size: all 50 labeled points per step, all 400 unlabeled ones."""
    base: dict[str, Any] = {
        "run": {"name": "spiral", "seed": 0, "max_steps": 300, "log_every": 100,
                "run_dir": str(tmp_path / "run"), "progress": False},
        "data": {"dataset": "spiral", "resolution": 1, "batch_size": 50, "unlabeled": {"batch_size": 400}},
        "model": {"name": "mlp"},
        "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
        "schedule": {"name": "cosine"},
        "eval": {"batch_size": 2000, "every_steps": 100000},
        "tracking": {"enabled": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


#: what this suite's tiny runs change from hasten.testing's
SUITE_DEFAULTS: dict[str, Any] = {
    "run": {"max_steps": 4},
    "data": {"labeled_fraction": 0.25, "options": {"train_size": 256, "val_size": 64}},
    "eval": {"every_steps": 1000},
}


def tiny_config_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A few steps of a small ResNet on procedural 16 px images with a quarter of the labels."""
    return testing.tiny_config_dict(tmp_path, SUITE_DEFAULTS, **sections)


@pytest.fixture
def spiral_config(tmp_path: Path):
    from hasten.config import validate_config

    def make(**sections: Any):
        return validate_config(spiral_config_dict(tmp_path, **sections))

    return make


@pytest.fixture
def tiny_config(tmp_path: Path):
    from hasten.config import validate_config

    def make(**sections: Any):
        return validate_config(tiny_config_dict(tmp_path, **sections))

    return make
