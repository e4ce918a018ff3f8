"""Datasets, streams and batch augmentation; importing registers the built-in datasets."""

from hasten.data import procedural  # noqa: F401
