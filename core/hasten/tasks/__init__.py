"""Tasks: how a batch becomes a loss. Importing this package registers them."""

from hasten.tasks import (
    classification,  # noqa: F401
    depth,  # noqa: F401
    ssl,  # noqa: F401
)
from hasten.tasks.base import Task

__all__ = ["Task"]
