"""Shared pieces of the model builders: the model contract and option checking."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from hasten.errors import UserError, did_you_mean


def reject_unknown_options(model: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Raise UserError naming the first unknown option and the allowed ones."""
    allowed_set = set(allowed)
    for name in options:
        if name not in allowed_set:
            raise UserError(
                f"model {model!r}: unknown option {name!r}{did_you_mean(name, allowed_set)}; "
                f"allowed: {', '.join(sorted(allowed_set)) or '(none)'}"
            )


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
