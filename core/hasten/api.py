"""The plugin API: everything a plugin may use from hasten, in one module.

Plugins (``plugins/*/hasten_*/`` and third-party ones) import from here, or
use the same names on the top-level package (``hasten.Plugin``,
``hasten.hookimpl``, ``hasten.State``...). Any other ``hasten.*`` module is
internal and may change; ``tests/test_plugin_contract.py`` fails when a
plugin of this repository imports one. docs/architecture.md ("The plugin
API") describes the surface.

* Writing a plugin: :class:`Plugin`, :data:`hookimpl`, :func:`register_plugin`,
  :class:`State`, :class:`Batch`, :class:`StepOutput`, :class:`Config`, the
  errors (:class:`UserError` for anything the user can fix).
* Images and models: :func:`is_image_batch` (images or vector data; of a
  dataset: ``state.task.info.is_vector``), :func:`resize_batch`, :func:`eval_batch`,
  :func:`build_model` (a registered architecture, e.g. a proxy network),
  :func:`check_resolution`, :func:`legal_resolution` and
  :func:`smallest_resolution` (one rule for which sides a model accepts),
  :func:`model_unchanged` with :class:`BufferSnapshot` (run a model without
  changing its state).
* What a task can do, asked with ``isinstance``: :class:`PerSampleLosses`
  (per-sample losses, selection), :class:`PairScoring` (pairs of views,
  Hard Augment); :data:`EXTRA_TARGETS` (extra target views in ``batch.extras``).
* Commands and tools: :func:`add_config_arguments`, :func:`load_config`,
  :func:`validate_config`, :class:`Trainer`, :func:`plugin_provides`,
  :func:`build_data_and_task`, :func:`load_checkpoint`.
* Tracking: :func:`tracking_uri`, :func:`tracking_run_id`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hasten.batch import Batch, StepOutput, is_image_batch
from hasten.checkpoint import load_checkpoint
from hasten.commands.arguments import add_config_arguments
from hasten.config import Config, load_config, validate_config
from hasten.data.augment import eval_batch, resize_batch
from hasten.engine import Trainer
from hasten.errors import DataError, TrainingInterrupted, TrainingStopped, UserError
from hasten.hookspecs import hookimpl
from hasten.models import (
    BufferSnapshot,
    build_model,
    check_resolution,
    legal_resolution,
    model_unchanged,
    smallest_resolution,
)
from hasten.plugins import Plugin, register_plugin
from hasten.registry import REGISTRY
from hasten.state import State
from hasten.tasks.base import PairScoring, PerSampleLosses
from hasten.tasks.ssl import EXTRA_TARGETS

if TYPE_CHECKING:
    from hasten.data.module import DataModule
    from hasten.tasks.base import Task


def plugin_provides(name: str, capability: str) -> bool:
    """Whether the installed plugin ``name`` declares ``capability`` in ``provides`` (False if not installed)."""
    from hasten.plugins import installed_plugins

    info = installed_plugins().get(name)
    return info is not None and info.plugin_class is not None and capability in info.plugin_class.provides


def build_data_and_task(config: Config) -> tuple[DataModule, Task]:
    """The data and the (untrained) task of ``config`` as a run builds them, without starting a run.

    For reports and tools that load a checkpoint into ``task.model``: the
    enabled plugins' ``hasten_register`` runs first (datasets, models they add).
    """
    from hasten.data.module import DataModule
    from hasten.plugins import PluginSet

    PluginSet.build(config).hook.hasten_register(registry=REGISTRY)
    data = DataModule(config)
    task = REGISTRY.tasks.get(config.task.name, key="task.name")(config, data.info)
    return data, task


def tracking_uri(config: Config) -> str:
    """The MLflow tracking URI a run of ``config`` logs to (``tracking.uri``, ``$MLFLOW_TRACKING_URI``, the
    local SQLite file), as the tracking built-in resolves it."""
    from hasten.builtins.mlflow_sender import resolve_uri

    return resolve_uri(config.tracking.uri)


def tracking_run_id(state: State) -> str | None:
    """The MLflow run id of this run, once the tracking built-in opened it (``None``: no run, or not yet)."""
    return (state.scratch.get("tracking") or {}).get("run_id") or None


__all__ = [
    "EXTRA_TARGETS",
    "REGISTRY",
    "Batch",
    "BufferSnapshot",
    "Config",
    "DataError",
    "PairScoring",
    "PerSampleLosses",
    "Plugin",
    "State",
    "StepOutput",
    "Trainer",
    "TrainingInterrupted",
    "TrainingStopped",
    "UserError",
    "add_config_arguments",
    "build_data_and_task",
    "build_model",
    "check_resolution",
    "eval_batch",
    "hookimpl",
    "is_image_batch",
    "legal_resolution",
    "load_checkpoint",
    "load_config",
    "model_unchanged",
    "plugin_provides",
    "register_plugin",
    "resize_batch",
    "smallest_resolution",
    "tracking_run_id",
    "tracking_uri",
    "validate_config",
]
