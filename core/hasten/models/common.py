"""Shared pieces of the model builders: the model contract and the classifier head."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from hasten.errors import UserError


def make_head(num_features: int, num_classes: int) -> nn.Module:
    """A linear classifier, or Identity when the model is a pure backbone (num_classes == 0)."""
    if num_classes < 0:
        raise UserError(f"num_classes must be >= 0, got {num_classes}")
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()


class Backbone(nn.Module):
    """The contract every hasten model follows.

    ``forward_features`` returns the (N, num_features) embedding used by SSL and
    kNN; ``forward`` applies ``head`` to it. ``min_resolution`` is the smallest
    square input side accepted; ``supports_any_resolution`` says whether every
    side >= min_resolution works (ViTs also need a multiple of ``patch_size``).
    """

    num_features: int
    min_resolution: int
    supports_any_resolution: bool = True
    head: nn.Module

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


class BufferSnapshot:
    """Room for a copy of every buffer of ``model`` (allocated once), for :func:`model_unchanged`."""

    def __init__(self, model: nn.Module) -> None:
        self.buffers = list(model.buffers())
        self.saved = [b.detach().clone() for b in self.buffers]

    def save(self) -> None:
        for saved, buffer in zip(self.saved, self.buffers, strict=True):
            saved.copy_(buffer)

    def restore(self) -> None:
        for saved, buffer in zip(self.saved, self.buffers, strict=True):
            buffer.copy_(saved)


@contextmanager
def model_unchanged(
    model: nn.Module, *, train: bool = False, buffers: BufferSnapshot | None = None
) -> Iterator[nn.Module]:
    """Run ``model`` without changing its state (scoring, evaluation, FLOP counting, diagnostics).

    Inside: no gradient, eval mode (``train=True``: train mode, e.g. BatchNorm
    with batch statistics). On exit every submodule gets back the train/eval
    mode it had; with ``buffers`` (a :class:`BufferSnapshot` of ``model``)
    every buffer is copied back too, since a train-mode forward updates
    BatchNorm's running statistics even under no_grad.
    """
    modes = [(module, module.training) for module in model.modules()]
    if buffers is not None:
        buffers.save()
    model.train(train)
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, mode in modes:
            module.training = mode
        if buffers is not None:
            buffers.restore()


def legal_resolution(model: nn.Module, resolution: int) -> int:
    """The side nearest ``resolution`` that ``model`` accepts: a multiple of its patch size (ViT), at least its
    ``min_resolution`` (the rule :func:`hasten.models.check_resolution` enforces)."""
    patch = int(getattr(model, "patch_size", 1) or 1)
    legal = max(patch, round(resolution / patch) * patch)
    return max(legal, smallest_resolution(model))


def smallest_resolution(model: nn.Module, multiple_of: int = 1) -> int:
    """The smallest side ``model`` accepts that is also a multiple of ``multiple_of`` (e.g. a schedule's
    resolution step): at least its ``min_resolution``, a multiple of its patch size (ViT)."""
    patch = int(getattr(model, "patch_size", 1) or 1)
    unit = math.lcm(patch, multiple_of)
    minimum = max(1, int(getattr(model, "min_resolution", 1)))
    return max(unit, -(-minimum // unit) * unit)
