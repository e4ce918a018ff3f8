"""A fully connected network for vector data (e.g. the 2-D spiral of the UBN study)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from hasten.errors import UserError
from hasten.models.common import Backbone, make_head, reject_unknown_options
from hasten.registry import REGISTRY


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


@REGISTRY.models.register("mlp")
def build_mlp(*, num_classes: int, in_channels: int, **options: Any) -> MLP:
    """Options: in_features (default in_channels), hidden ([64, 64, 64, 64]), batchnorm (True)."""
    reject_unknown_options("mlp", options, ("in_features", "hidden", "batchnorm"))
    in_features = int(options.get("in_features", in_channels))
    hidden = [int(h) for h in options.get("hidden", (64, 64, 64, 64))]
    return MLP(num_classes, in_features, hidden, bool(options.get("batchnorm", True)))
