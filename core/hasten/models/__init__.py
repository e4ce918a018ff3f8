"""Built-in models; importing this package registers them in ``REGISTRY.models``.

Every model follows :class:`~hasten.models.common.Backbone`: ``num_features``,
``forward_features(x) -> (N, num_features)``, ``forward = head(forward_features)``,
``min_resolution`` and ``supports_any_resolution``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from torch import nn

from hasten.errors import UserError
from hasten.models import dispnet, mlp, resnet, vit
from hasten.models.common import (
    Backbone,
    BufferSnapshot,
    legal_resolution,
    make_head,
    model_unchanged,
    smallest_resolution,
)
from hasten.models.mlp import MLP
from hasten.models.resnet import SmallResNet, TorchvisionResNet
from hasten.models.vit import VisionTransformer, sincos_2d
from hasten.registry import REGISTRY


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    options: Mapping[str, Any] | None = None,
    key: str | None = None,
    options_key: str = "model.options",
) -> Backbone:
    """Build the registered model ``name`` with ``options`` (validated against its options model);
    ``key`` (a config path) prefixes lookup errors, ``options_key`` those of the options.

    Typed as :class:`Backbone` (every built-in is one); a plugin's model must
    provide the same attributes.
    """
    component = REGISTRY.models.get(name, key=key)
    return cast(Backbone, component.build(options, key=options_key, num_classes=num_classes, in_channels=in_channels))


def check_resolution(model: nn.Module, resolution: int, key: str) -> None:
    """Raise UserError when ``model`` cannot take square inputs of side ``resolution``.

    Vector models (``mlp``: min_resolution 0, not any-resolution) accept only 0.
    """
    minimum = int(getattr(model, "min_resolution", 1))
    patch = getattr(model, "patch_size", None)
    if minimum == 0 and not getattr(model, "supports_any_resolution", True):
        if resolution != 0:
            raise UserError(f"{key}: resolution {resolution} does not apply: this model takes vector data (use 0)")
        return
    if resolution < minimum:
        raise UserError(f"{key}: resolution {resolution} is below the smallest this model accepts ({minimum})")
    if isinstance(patch, int) and resolution % patch:
        below = resolution - resolution % patch
        raise UserError(
            f"{key}: resolution {resolution} must be a multiple of {patch} (the patch size); "
            f"nearest legal values: {below}, {below + patch}"
        )


__all__ = [
    "MLP",
    "Backbone",
    "BufferSnapshot",
    "SmallResNet",
    "TorchvisionResNet",
    "VisionTransformer",
    "build_model",
    "check_resolution",
    "dispnet",
    "legal_resolution",
    "make_head",
    "mlp",
    "model_unchanged",
    "resnet",
    "sincos_2d",
    "smallest_resolution",
    "vit",
]
