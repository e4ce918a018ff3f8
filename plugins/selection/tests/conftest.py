"""Fixtures for the selection plugin's tests: tiny runs (seconds on 2 CPU cores), no other plugin needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hasten import testing

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


#: what this suite's tiny runs change from hasten.testing's
SUITE_DEFAULTS: dict[str, Any] = {
    "run": {"max_steps": 8},
    "data": {"options": {"train_size": 256, "val_size": 64}},
    "eval": {"every_steps": 1000},
}


def tiny_config_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A few steps of a small ResNet on procedural 16 px images, tracking off."""
    return testing.tiny_config_dict(tmp_path, SUITE_DEFAULTS, **sections)


@pytest.fixture
def tiny_config(tmp_path: Path):
    return testing.config_maker(tmp_path, SUITE_DEFAULTS)


@pytest.fixture(scope="module")
def module_config(tmp_path_factory):
    """Like ``tiny_config``, for module-scoped runs shared by several tests."""
    return testing.config_maker(lambda: tmp_path_factory.mktemp("run"), SUITE_DEFAULTS)


@pytest.fixture(scope="session", autouse=True)
def selection_registered():
    """Make ``selection`` available whether or not the distribution is installed (PYTHONPATH runs)."""
    from hasten_selection.plugin import Selection

    with testing.plugin_available(Selection):
        yield
