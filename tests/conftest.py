"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HASTEN_SHARED_DATA") or REPO.parent / "shared" / "datasets")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_config_dict(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A run of a few steps on small procedural images, tracking off."""
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
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


@pytest.fixture
def tiny_config(tmp_path: Path):
    from hasten.config import validate_config

    def make(**sections: Any):
        return validate_config(tiny_config_dict(tmp_path, **sections))

    return make
