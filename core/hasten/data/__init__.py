"""Datasets (the contract, readers, the procedural default) and batch augmentation.

Importing this package registers the built-in datasets in ``REGISTRY.datasets``.
"""

from __future__ import annotations

from hasten.data import augment, datasets, procedural, readers
from hasten.data import depth as depth  # registers procedural_depth and kitti
from hasten.data import spiral as spiral
from hasten.data.augment import AugmentPolicy, augment_batch, eval_batch, resize_batch
from hasten.data.datasets import (
    ImageDataset,
    IndexedSubset,
    TensorImageDataset,
    passthrough_collate,
    split_labeled,
)
from hasten.data.procedural import render_scenes

__all__ = [
    "AugmentPolicy",
    "ImageDataset",
    "IndexedSubset",
    "TensorImageDataset",
    "augment",
    "augment_batch",
    "datasets",
    "eval_batch",
    "passthrough_collate",
    "procedural",
    "readers",
    "render_scenes",
    "resize_batch",
    "split_labeled",
]
