"""Tiny runs for the progressive plugin's tests (core + this plugin only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hasten import testing

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

NOISE_SIZES = {"train": 64, "val": 16, "unlabeled": 16}


def build_noise(*, split: str, resolution: int, seed: int, path: str | None = None, **options: Any):
    """Random uint8 images, 4 classes: built in microseconds, unlike the procedural
    scenes (rendered 500 at a time), so these tests spend their time in the steps."""
    from hasten.data.datasets import TensorImageDataset

    generator = torch.Generator().manual_seed(seed * 10 + list(NOISE_SIZES).index(split))
    n = NOISE_SIZES[split]
    images = torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8, generator=generator)
    return TensorImageDataset(images, torch.arange(n) % 4, num_classes=4, mean=(0.5,) * 3, std=(0.3,) * 3)


def _register_noise() -> None:
    from hasten.registry import REGISTRY

    REGISTRY.datasets.add("progressive_test_noise", build_noise, replace=True)


_register_noise()


@pytest.fixture(scope="session", autouse=True)
def progressive_plugin():
    """The plugin through its entry point (tox), or registered in code (a source checkout on PYTHONPATH)."""
    from hasten.plugins import installed_plugins, register_plugin, unregister_plugin
    from hasten_progressive import Progressive

    if "progressive" in installed_plugins():
        yield
        return
    register_plugin(Progressive)
    yield
    unregister_plugin("progressive")


#: what this suite's tiny runs change from hasten.testing's
SUITE_DEFAULTS: dict[str, Any] = {
    "run": {"max_steps": 8, "log_every": 1},
    "data": {"dataset": "progressive_test_noise", "resolution": 32, "batch_size": 4, "options": {}},
    "model": {"options": {"width": 4}},
    "eval": {"batch_size": 16, "every_steps": 1000},
}


def tiny_config_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A few steps on 32 px noise images, tracking and progress off."""
    return testing.tiny_config_dict(tmp_path, SUITE_DEFAULTS, **sections)


@pytest.fixture
def tiny_config(tmp_path: Path):
    from hasten.config import validate_config

    def make(**sections: Any):
        return validate_config(tiny_config_dict(tmp_path, **sections))

    return make
