"""Pre-flight: the checks of values that would otherwise only fail after the data is built.

The config models validate each value on its own; some values can only be
judged against a component (the model a resolution must suit, the metrics a
task produces). :func:`preflight` judges them when the run starts, after the
plugins registered their components and before any dataset is built or any
model trained, so such a mistake costs milliseconds and its message names
the key path.
"""

from __future__ import annotations

from typing import Any

import torch

from hasten.config import Config
from hasten.errors import UserError
from hasten.registry import REGISTRY

#: metrics the engine logs itself on every logging step (valid eval.metric values whatever the task)
ENGINE_METRIC_PREFIXES = ("train/", "flops/", "time/")


def preflight(config: Config) -> None:
    """Raise :class:`UserError` for the first component-dependent mistake of ``config``."""
    data = config.data
    REGISTRY.datasets.get(data.dataset, key="data.dataset")
    if data.unlabeled is not None and data.unlabeled.dataset is not None:
        REGISTRY.datasets.get(data.unlabeled.dataset, key="data.unlabeled.dataset")
    REGISTRY.models.get(config.model.name, key="model.name")
    # (every component's options were validated with the config: hasten.registry.validate_component_options)
    task_cls = REGISTRY.tasks.get(config.task.name, key="task.name").factory
    check_model_resolution(config)
    check_eval_metric(config, task_cls)


def check_model_resolution(config: Config) -> None:
    """``data.resolution`` against the model's constraints (a ViT's patch size must divide it).

    The model is built on the meta device (no memory, no initialisation
    cost); its option errors surface here too, before any data is read.
    """
    from hasten.models import build_model, check_resolution

    try:
        with torch.device("meta"):
            model = build_model(
                config.model.name, num_classes=2, in_channels=3, options=config.model.options, key="model.name"
            )
    except UserError:
        raise
    except Exception:  # a model that cannot be built on the meta device: the real build will judge it
        return
    spatial = int(getattr(model, "min_resolution", 1)) != 0 or getattr(model, "supports_any_resolution", True)
    if spatial:
        check_resolution(model, config.data.resolution, key="data.resolution")


def check_eval_metric(config: Config, task_cls: Any) -> None:
    """``eval.metric`` must be a metric the run produces: declared by the task (``Task.metrics``), an
    enabled plugin (``Plugin.metrics``), or logged by the engine (``train/...``, ``flops/...``)."""
    metric = config.eval.metric
    declared = getattr(task_cls, "metrics", None)
    if "metric" not in config.eval.model_fields_set:
        return  # the default (val/acc1) is not the user's choice: a task without it is not an error
    if declared is None or metric.startswith(ENGINE_METRIC_PREFIXES):
        return  # a task that does not declare its metrics cannot be checked
    from hasten.plugins import installed_plugins

    infos = installed_plugins()
    allowed = list(declared)
    for name in config.plugins:
        info = infos.get(name)
        if info is not None and info.plugin_class is not None:
            allowed += list(getattr(info.plugin_class, "metrics", ()))
    if metric not in allowed:
        raise UserError(
            f"eval.metric: {metric!r} is not produced by task {config.task.name!r}"
            f"{' or the enabled plugins' if config.plugins else ''}; allowed: {', '.join(dict.fromkeys(allowed))} "
            f"(or a training metric, {', '.join(p + '...' for p in ENGINE_METRIC_PREFIXES)})"
        )
