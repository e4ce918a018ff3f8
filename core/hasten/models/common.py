"""Shared pieces of the model builders: the model contract and the classifier head."""

from __future__ import annotations

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
