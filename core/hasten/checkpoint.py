"""Checkpoints: atomic writes, safe loads, discovery of the latest valid one.

A checkpoint is a ``torch.save`` dict of tensors and plain values only, so it
loads with ``torch.load(weights_only=True)``: a file carrying a pickled object
that would run code is refused. Writes go to a temporary file in the same
folder, are fsync'ed, then renamed over the final name, so a run killed at
any moment leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from hasten.errors import UserError

_NAME = re.compile(r"^step-(\d{9})\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_atomic(blob: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(blob, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_checkpoint(run_dir: str | Path, step: int, blob: dict[str, Any], keep: int) -> Path:
    """Write ``step-<step>.pt`` atomically and prune all but the newest ``keep``."""
    folder = checkpoint_dir(run_dir)
    path = folder / f"step-{step:09d}.pt"
    save_atomic(blob, path)
    existing = sorted(p for p in folder.iterdir() if _NAME.match(p.name))
    for old in existing[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load safely (``weights_only=True``); a file that is not a plain
    checkpoint raises :class:`UserError` naming it."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "refused"
        raise UserError(f"{path}: not a loadable hasten checkpoint (refused by the safe loader: {exc})") from None
    if not isinstance(blob, dict) or "step" not in blob or "model" not in blob:
        raise UserError(f"{path}: not a hasten checkpoint (no step/model entries)")
    return blob


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``run_dir`` that loads, or None."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    for path in sorted((p for p in folder.iterdir() if _NAME.match(p.name)), reverse=True):
        try:
            load_checkpoint(path)
        except UserError:
            continue
        return path
    return None
