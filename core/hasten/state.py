"""The mutable run state every hook receives (the per-step records live in :mod:`hasten.batch`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from hasten.batch import Batch, StepOutput

__all__ = ["Batch", "State", "StepOutput"]

if TYPE_CHECKING:
    from hasten.accounting import FlopAccountant
    from hasten.config import Config
    from hasten.data.module import DataModule
    from hasten.tasks.base import Task


@dataclass
class State:
    """Everything a hook may read or change during a run.

    Hyper-parameters for the current step (``lr``, ``momentum``,
    ``resolution``, ``aug_magnitude``) are set by ``hasten_step_start``
    implementations; the engine applies ``lr``/``momentum`` to the optimizer.
    ``generator`` is the run's device-side random generator (augmentation,
    sampling); plugins that need their own randomness derive a generator from
    ``seed`` so resumes stay exact.
    """

    config: Config
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    task: Task
    data: DataModule
    device: torch.device
    flops: FlopAccountant
    generator: torch.Generator
    seed: int
    total_steps: int
    steps_per_epoch: int
    batch_size: int
    resolution: int
    max_resolution: int
    aug_magnitude: float
    lr: float
    momentum: float
    rank: int = 0
    world_size: int = 1
    step: int = 0
    epoch: int = 0
    samples_seen: int = 0
    images_loaded: int = 0
    run_dir: str = "."
    #: the model as the optimizer sees it (the DDP wrapper under torchrun)
    train_model: torch.nn.Module | None = None
    #: latest logged/evaluated scalar values, by metric name
    metrics: dict[str, float] = field(default_factory=dict)
    #: set when the run ends early ("nan", "signal", ...)
    stop_reason: str | None = None
    #: a plugin sets this (a reason) to end training gracefully after the current step
    should_stop: str | None = None
    #: length of the LR warm-up in steps, published by whoever owns the LR schedule
    #: in ``hasten_setup`` (the core schedule or a plugin such as f1clr); 0 = none
    warmup_steps: int = 0
    #: what this run is, tagged ``hasten.run_type`` in MLflow so the UI can filter:
    #: "train", or "lr-find", "compare", "sweep" when a command drives the run
    run_type: str = "train"
    #: free space for plugins, keyed by plugin name
    scratch: dict[str, Any] = field(default_factory=dict)
    #: the plugin manager, to call hooks from plugins (e.g. ``sampling_active``)
    hooks: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def progress(self) -> float:
        """Fraction of training done at the start of this step, in [0, 1)."""
        return self.step / max(1, self.total_steps)

    def sampling_active(self, step: int | None = None) -> bool:
        """``hasten_sampling_active`` ANDed over plugins (True when none answers)."""
        answers = self.hooks.hasten_sampling_active(state=self, step=self.step if step is None else step)
        return all(answers)
