"""Fixtures for the f1clr tests: tiny runs that train in seconds; the plugin is found
through its entry point when installed (tox -e f1clr), else registered in code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hasten import testing
from hasten.plugins import installed_plugins, register_plugin
from hasten_f1clr.plugin import F1CLR

REPO = Path(__file__).resolve().parents[3]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

if "f1clr" not in installed_plugins():
    register_plugin(F1CLR)


#: what this suite's tiny runs change from hasten.testing's
SUITE_DEFAULTS: dict[str, Any] = {
    "eval": {"every_steps": 1000},
}


def tiny_config_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A run of a few steps on small procedural images, tracking off."""
    return testing.tiny_config_dict(tmp_path, SUITE_DEFAULTS, **sections)


@pytest.fixture
def tiny_config(tmp_path: Path):
    return testing.config_maker(tmp_path, SUITE_DEFAULTS)
