"""The task contract: how a batch becomes a loss, per sample where possible."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from pydantic import BaseModel, ValidationError
from torch import nn

from hasten.config import Config, format_validation_error
from hasten.data.augment import AugmentPolicy, ViewSpec
from hasten.errors import UserError
from hasten.registry import Options

if TYPE_CHECKING:
    from hasten.accounting import FlopAccountant
    from hasten.data.stream import DataInfo
    from hasten.state import Batch, State, StepOutput


class NoOptions(Options):
    """A task without options."""


class Task:
    """Base class of tasks (registered in ``REGISTRY.tasks``).

    ``model`` holds every trainable module of the task (backbone, heads,
    projectors); the optimizer trains ``model.parameters()``.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: how many augmented views of each image a training step uses
    num_views: int = 1
    #: the metrics ``evaluate`` returns (eval.metric is checked against them before a run starts);
    #: None: not declared, not checked
    metrics: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: Config, info: DataInfo) -> None:
        self.config = config
        self.info = info
        try:
            self.options: Any = self.Options.model_validate(config.task.options)
        except ValidationError as exc:
            message = format_validation_error(exc, config.task.options, prefix="task.options", model=self.Options)
            raise UserError(message) from None
        self.model: nn.Module = nn.Identity()

    # -- hooks' defaults
    def views(self, state: State, batch: Batch) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, state: State, batch: Batch, model: nn.Module) -> StepOutput:
        raise NotImplementedError

    def loader_views(self) -> ViewSpec | None:
        """The views a loader that augments itself (DALI) may make for this task, or ``None``.

        A task whose :meth:`views` are ``num_views`` independent draws of one
        policy declares them here; the engine hands them to the stream unless
        a plugin implements ``hasten_views``, and then skips :meth:`views`.
        Tasks whose views need more (depth: the depth map follows the crop)
        keep the default ``None`` and get ``batch.images``.
        """
        return None

    def evaluate(self, state: State) -> dict[str, float]:
        return {}

    def after_optimizer_step(self, state: State) -> None:
        """After each optimizer step (momentum encoders update here)."""

    def setup(self, state: State) -> None:
        """Once the model is on ``state.device`` (built-in Defaults' ``hasten_setup``): move the
        task's non-trainable parts (momentum encoders, queues) there."""

    def state_dict(self) -> dict[str, Any]:
        """Task state outside ``model`` that a resume needs (momentum encoder, queue); saved by the engine."""
        return {}

    def load_state_dict(self, blob: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def forward_flops_per_sample(self, accountant: FlopAccountant, resolution: int) -> float:
        """Forward FLOPs of one training sample (all its views) at ``resolution``."""
        return self.num_views * accountant.forward_per_sample(self.model, self.input_shape(resolution))

    def input_shape(self, resolution: int) -> tuple[int, ...]:
        if self.info.is_vector:
            return (self.info.channels,)
        return (self.info.channels, resolution, resolution)

    # -- helpers
    def augment_policy(self, default: str = "classification") -> AugmentPolicy:
        aug = self.config.data.augment
        preset = aug.preset if "preset" in aug.model_fields_set else default
        if preset == "simclr":
            policy = AugmentPolicy.simclr()
        elif preset == "none":
            policy = AugmentPolicy(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=0.0)
        else:
            policy = AugmentPolicy()
        changes = {
            k: getattr(aug, k)
            for k in ("crop_scale", "flip", "color_jitter", "grayscale", "blur", "solarize")
            if getattr(aug, k) is not None
        }
        return dataclasses.replace(policy, **changes) if changes else policy


@runtime_checkable
class PerSampleLosses(Protocol):
    """A task that can score samples one by one (Fast Online Minibatch Selection ranks them)."""

    def sample_losses(self, model: nn.Module, inputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-sample losses (N,) of ``inputs``, no reduction; the caller holds no_grad and the model's mode."""
        ...


@runtime_checkable
class PairScoring(Protocol):
    """A task that trains on pairs of views and can score every pair of m views (Hard Augment mines them)."""

    def augment_views(self, state: State, images: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` independent augmentations of every image: (count, N, C, r, r)."""
        ...

    def score_pairs(self, state: State, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses (N, C(m, 2)) of all pairs of ``views`` (m, N, C, r, r) and the targets, without gradient
        and without changing any model state."""
        ...

    def scoring_flops_per_view(self, accountant: FlopAccountant, resolution: int) -> float:
        """Forward FLOPs of scoring one view at ``resolution``."""
        ...


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
