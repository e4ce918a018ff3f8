"""DispNet-style encoder-decoder for dense depth (docs/methods.md section 1, after SfMLearner).

Encoder: per level a stride-2 and a stride-1 3x3 conv-BN-ReLU block. Decoder:
per level upsample to the skip connection's size, a 3x3 conv-BN-ReLU, concatenate
the encoder skip and the coarser prediction, another conv-BN-ReLU, and a 3x3
prediction conv. Each prediction X_i becomes depth

    depth_i = 1 / (s * sigmoid(X_i) + m),   s = 0.4, m = 0.0125  (depth in [1/(s+m), 1/m] = [2.4, 80] m).

``forward`` returns the depths of every predicted scale, finest (input size) first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from hasten.errors import UserError
from hasten.registry import REGISTRY, Options


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def disparity_to_depth(logits: Tensor, scale: float, minimum: float) -> Tensor:
    """depth = 1 / (scale * sigmoid(logits) + minimum)."""
    return 1.0 / (scale * torch.sigmoid(logits) + minimum)


class DispNet(nn.Module):
    """Encoder-decoder with skip connections and multi-scale depth predictions."""

    #: the task contract: a dense model returns per-pixel predictions, not class logits
    dense_output = True

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        scales: int | None = None,
        disp_scale: float = 0.4,
        disp_min: float = 0.0125,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        scales = len(widths) if scales is None else scales  # default: every decoder level predicts
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise UserError(f"model 'dispnet': widths needs >= 2 positive entries, got {widths}")
        if not 1 <= scales <= len(widths):
            raise UserError(f"model 'dispnet': scales must be in [1, {len(widths)}] (decoder levels), got {scales}")
        if disp_scale <= 0 or disp_min <= 0:
            raise UserError(f"model 'dispnet': disp_scale and disp_min must be > 0, got {disp_scale}, {disp_min}")
        self.disp_scale, self.disp_min, self.scales = float(disp_scale), float(disp_min), scales
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoder.append(nn.Sequential(conv_bn_relu(previous, width, 2), conv_bn_relu(width, width)))
            previous = width
        # Decoder levels, coarse to fine: to the sizes of encoder outputs len-2 .. 0, then the input size.
        decoder_widths = [*reversed(widths[:-1]), max(1, widths[0] // 2)]
        skip_widths = [*reversed(widths[:-1]), 0]
        self.upconvs = nn.ModuleList()
        self.iconvs = nn.ModuleList()
        self.heads = nn.ModuleList()
        first_head = len(decoder_widths) - scales
        for level, (width, skip) in enumerate(zip(decoder_widths, skip_widths, strict=True)):
            self.upconvs.append(conv_bn_relu(previous, width))
            coarser = 1 if level > first_head else 0  # the previous prediction is an input
            self.iconvs.append(conv_bn_relu(width + skip + coarser, width))
            self.heads.append(nn.Conv2d(width, 1, 3, padding=1) if level >= first_head else nn.Identity())
            previous = width
        self.first_head = first_head
        self.num_features = widths[-1]
        self.min_resolution = 2 ** len(widths)
        self.supports_any_resolution = True

    def forward_features(self, x: Tensor) -> Tensor:
        """Global average of the deepest encoder features (the backbone contract)."""
        for block in self.encoder:
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        size = x.shape[-2:]
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        targets = [*reversed(skips[:-1]), None]
        depths: list[Tensor] = []
        previous: Tensor | None = None
        for level, skip in enumerate(targets):
            out_size = size if skip is None else skip.shape[-2:]
            x = self.upconvs[level](F.interpolate(x, size=out_size, mode="nearest"))
            parts = [x] if skip is None else [x, skip]
            if previous is not None:
                parts.append(F.interpolate(previous, size=out_size, mode="bilinear", align_corners=False))
            x = self.iconvs[level](torch.cat(parts, dim=1))
            if level >= self.first_head:
                previous = torch.sigmoid(self.heads[level](x))
                depths.append(1.0 / (self.disp_scale * previous + self.disp_min))
        return tuple(reversed(depths))


class DispNetOptions(Options):
    """``model.options`` of ``model.name: dispnet``."""

    widths: list[int] = Field([32, 64, 128, 256], description="encoder stage widths (>= 2 positive entries)")
    scales: int | None = Field(None, description="decoder levels that predict depth; default: all len(widths)")
    disp_scale: float = Field(0.4, description="depth = 1 / (disp_scale * sigmoid + disp_min)")
    disp_min: float = Field(0.0125, description="see disp_scale: the largest depth is 1 / disp_min")


@REGISTRY.models.register("dispnet", options=DispNetOptions)
def build_dispnet(*, num_classes: int, in_channels: int, options: DispNetOptions) -> DispNet:
    """DispNet-style encoder-decoder returning depth maps at several scales (``num_classes`` is unused)."""
    return DispNet(in_channels, options.widths, options.scales, options.disp_scale, options.disp_min)
