"""ResNets: a small CPU-sized one and torchvision's resnet18/resnet50."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
import torchvision
from pydantic import Field
from torch import Tensor, nn

from hasten.errors import UserError
from hasten.models.common import Backbone, make_head
from hasten.registry import REGISTRY, Options


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_width: int, out_width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_width, out_width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_width)
        self.conv2 = nn.Conv2d(out_width, out_width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_width)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_width != out_width:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_width, out_width, 1, stride, bias=False), nn.BatchNorm2d(out_width)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(Backbone):
    """A ResNet for 32-64 px images on CPU: 3x3 stem, four BasicBlock stages.

    Stage widths are width * (1, 2, 4, 8); stage strides (1, 2, 2, 2) after a
    stem of stride ``stem_stride``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        width: int = 16,
        blocks: Sequence[int] = (1, 1, 1, 1),
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if width < 1 or len(blocks) == 0 or any(b < 1 for b in blocks):
            raise UserError(f"small_resnet: width must be >= 1 and blocks non-empty >= 1, got {width}, {blocks}")
        if stem_stride not in (1, 2):
            raise UserError(f"small_resnet: stem_stride must be 1 or 2, got {stem_stride}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_width = width
        for stage, count in enumerate(blocks):
            out_width = width * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                stages.append(BasicBlock(in_width, out_width, stride))
                in_width = out_width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_width
        # The last stage still sees at least 1x1 pixel of real data.
        self.min_resolution = stem_stride * 2 ** (len(blocks) - 1)
        self.supports_any_resolution = True
        self.head = make_head(self.num_features, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


class TorchvisionResNet(Backbone):
    """torchvision's ResNet with the fc layer split off as ``head``."""

    def __init__(
        self, arch: str, num_classes: int, in_channels: int, small_stem: bool, zero_init_residual: bool
    ) -> None:
        super().__init__()
        body = getattr(torchvision.models, arch)(weights=None, zero_init_residual=zero_init_residual)
        if small_stem:
            # 3x3 stride-1 stem without max-pool keeps detail on 32-64 px images.
            body.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            body.maxpool = nn.Identity()
        elif in_channels != 3:
            body.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.num_features = body.fc.in_features
        body.fc = nn.Identity()
        self.body = body
        self.min_resolution = 8 if small_stem else 32
        self.supports_any_resolution = True
        self.head = make_head(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        features: Tensor = self.body(x)
        return features


class SmallResNetOptions(Options):
    """``model.options`` of ``model.name: small_resnet``."""

    width: int = Field(16, ge=1, description="channels of the first stage (stages: width x 1, 2, 4, 8)")
    blocks: list[Annotated[int, Field(ge=1)]] = Field(
        [1, 1, 1, 1], min_length=1, description="BasicBlocks per stage (one stage per entry)"
    )
    stem_stride: Literal[1, 2] = Field(1, description="stride of the 3x3 stem")


@REGISTRY.models.register("small_resnet", options=SmallResNetOptions)
def build_small_resnet(*, num_classes: int, in_channels: int, options: SmallResNetOptions) -> SmallResNet:
    """A ResNet for 32-64 px images on CPU: 3x3 stem, BasicBlock stages."""
    return SmallResNet(
        num_classes, in_channels, width=options.width, blocks=tuple(options.blocks), stem_stride=options.stem_stride
    )


class TorchvisionResNetOptions(Options):
    """``model.options`` of ``model.name: resnet18`` / ``resnet50``."""

    small_stem: bool = Field(False, description="3x3 stride-1 stem without max-pool, for 32-64 px images")
    zero_init_residual: bool = Field(False, description="zero-initialise the last BatchNorm of each block")


def _torchvision_builder(arch: str) -> Any:
    def build(*, num_classes: int, in_channels: int, options: TorchvisionResNetOptions) -> TorchvisionResNet:
        return TorchvisionResNet(
            arch, num_classes, in_channels, small_stem=options.small_stem,
            zero_init_residual=options.zero_init_residual,
        )

    build.__doc__ = f"torchvision {arch} (randomly initialised)."
    return build


REGISTRY.models.add("resnet18", _torchvision_builder("resnet18"), options=TorchvisionResNetOptions)
REGISTRY.models.add("resnet50", _torchvision_builder("resnet50"), options=TorchvisionResNetOptions)
