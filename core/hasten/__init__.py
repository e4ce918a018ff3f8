"""hasten: a plugin-based PyTorch trainer that makes computer-vision training cheaper.

Public API for plugin authors and scripts::

    import hasten
    @hasten.hookimpl
    def hasten_step_start(self, state): ...

    result = hasten.train(hasten.load_config("examples/quickstart.yaml"))
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from hasten.config import Config, load_config
from hasten.errors import DataError, TrainingStopped, UserError
from hasten.hookspecs import hookimpl
from hasten.plugins import Plugin, register_plugin
from hasten.registry import REGISTRY, Options
from hasten.state import Batch, State, StepOutput

try:
    __version__ = version("hasten")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

# Built-in components register themselves on import.
from hasten import data as _data  # noqa: F401
from hasten import models as _models  # noqa: F401
from hasten import optim as _optim  # noqa: F401
from hasten import schedules as _schedules  # noqa: F401
from hasten import tasks as _tasks  # noqa: F401
from hasten.engine import RunResult, Trainer, train

__all__ = [
    "REGISTRY",
    "Batch",
    "Config",
    "DataError",
    "Options",
    "Plugin",
    "RunResult",
    "State",
    "StepOutput",
    "Trainer",
    "TrainingStopped",
    "UserError",
    "__version__",
    "hookimpl",
    "load_config",
    "register_plugin",
    "train",
]
