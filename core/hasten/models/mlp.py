"""A fully connected network for vector data (e.g. the 2-D spiral of the UBN study)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import Field
from torch import Tensor, nn

from hasten.errors import UserError
from hasten.models.common import Backbone, make_head
from hasten.registry import REGISTRY, Options


class MLP(Backbone):
    """Linear (+ BatchNorm1d) + ReLU per hidden layer, then a linear head.

    Inputs with more than two dims are flattened, so (N, C, H, W) images work
    when ``in_features == C*H*W``. With the default four hidden layers the
    network has five linear layers.
    """

    def __init__(self, num_classes: int, in_features: int, hidden: Sequence[int], batchnorm: bool) -> None:
        super().__init__()
        if in_features < 1 or any(h < 1 for h in hidden):
            raise UserError(f"mlp: in_features and hidden sizes must be >= 1, got {in_features}, {list(hidden)}")
        layers: list[nn.Module] = []
        width = in_features
        for out in hidden:
            # BN follows the linear layer, so its bias would be redundant.
            layers.append(nn.Linear(width, out, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.ReLU(inplace=True))
            width = out
        self.body = nn.Sequential(*layers)
        self.in_features = in_features
        self.num_features = width
        # Vector data has no spatial size: resolution 0 is the only one that applies.
        self.min_resolution = 0
        self.supports_any_resolution = False
        self.head = make_head(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        features: Tensor = self.body(x.flatten(1))
        return features


class MLPOptions(Options):
    """``model.options`` of ``model.name: mlp``."""

    in_features: int | None = Field(None, ge=1, description="input features; default: the data's channels")
    hidden: list[Annotated[int, Field(ge=1)]] = Field([64, 64, 64, 64], description="hidden layer widths")
    batchnorm: bool = Field(True, description="BatchNorm after each hidden layer")


@REGISTRY.models.register("mlp", options=MLPOptions)
def build_mlp(*, num_classes: int, in_channels: int, options: MLPOptions) -> MLP:
    """A multi-layer perceptron for vector data (Linear-BN-ReLU blocks)."""
    in_features = options.in_features if options.in_features is not None else in_channels
    return MLP(num_classes, in_features, list(options.hidden), options.batchnorm)
