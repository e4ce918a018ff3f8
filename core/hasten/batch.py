"""The per-step data records, Batch and StepOutput: a leaf module (torch only), so the data layer,
tasks and plugins share them without importing the run state."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def is_image_batch(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a batch of images (N, C, H, W); otherwise it holds vector data (N, D).
    The one way to ask it of a tensor; of a dataset, ask :attr:`hasten.data.stream.DataInfo.is_vector`."""
    return tensor.dim() == 4


@dataclass
class Batch:
    """One step's data as it moves through the hooks.

    ``images`` are uint8 (N, C, H, W) at the source size on the training device
    (or float vectors for vector data). ``views`` are the augmented float
    inputs the task trains on (one for classification, two or more for SSL);
    a loader that augments itself (DALI) fills ``views`` and the core
    augmentation is skipped. ``indices`` are dataset indices (selection
    diagnostics, coverage tests). ``unlabeled`` carries the second stream's
    batch when the data config names one (UBN). ``extras`` holds
    task-specific tensors (e.g. depth maps) indexed like ``images``.
    ``loss_weights`` (N,), when a selection sets them, weight each sample's
    loss in the training loss (:meth:`mean_loss`), e.g. the 1/(1-r) of
    samples kept by unbiased pruning; None is the plain mean.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    views: list[torch.Tensor] = field(default_factory=list)
    unlabeled: Batch | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    loss_weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, keep: torch.Tensor) -> Batch:
        """The samples at positions ``keep`` (views and extras included)."""
        return Batch(
            images=self.images[keep],
            labels=self.labels[keep],
            indices=self.indices[keep],
            views=[v[keep] for v in self.views],
            unlabeled=self.unlabeled,
            extras={k: v[keep] for k, v in self.extras.items()},
            loss_weights=None if self.loss_weights is None else self.loss_weights[keep],
        )

    def to(self, device: torch.device, non_blocking: bool = True) -> Batch:
        return Batch(
            images=self.images.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            indices=self.indices,
            views=[v.to(device, non_blocking=non_blocking) for v in self.views],
            unlabeled=None if self.unlabeled is None else self.unlabeled.to(device, non_blocking),
            extras={k: v.to(device, non_blocking=non_blocking) for k, v in self.extras.items()},
            loss_weights=None if self.loss_weights is None else self.loss_weights.to(device, non_blocking=non_blocking),
        )

    def mean_loss(self, sample_losses: torch.Tensor) -> torch.Tensor:
        """The training loss of per-sample losses (N,): their mean, weighted by :attr:`loss_weights` if set
        (divided by N, not by the weights' sum: a weight of 1/(1-r) restores the expectation of the full data)."""
        if self.loss_weights is None:
            return sample_losses.mean()
        return (sample_losses * self.loss_weights.to(sample_losses.dtype)).mean()


@dataclass
class StepOutput:
    """What a forward returns: the scalar ``loss`` to back-propagate, per-sample
    losses when the task has them (selection ranks them; detached), the number
    of samples trained on, and extra scalar tensors to log (kept on device
    until a logging step)."""

    loss: torch.Tensor
    sample_losses: torch.Tensor | None = None
    num_samples: int = 0
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
