"""The two-class spiral of the UBN toy study (docs/methods.md section 1, Fig. 2.2-2.5).

Vector data: float (N, 2) points, ``channels == 2``, ``source_resolution == 0``.
Class k lies on the arm ``r(t) = t / t_max``, angle ``t + k * pi``, for
``t = t_max * sqrt(u)``, ``u ~ U(0, 1)`` (points spread evenly along the arm's
length), plus isotropic Gaussian noise. The splits are independent draws of
the same distribution: ``train`` holds the labeled points (25 per class by
default), ``unlabeled`` the unlabeled ones (200 per class, labels -1, true
classes kept in ``hidden_labels``), ``val`` a dense held-out set (1000 per class).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from hasten.data.datasets import TensorImageDataset, check_split
from hasten.registry import REGISTRY, Options

STREAMS = {"train": 0, "val": 1, "unlabeled": 2}


def make_spirals(
    per_class: int, seed: int, *, turns: float = 2.5, noise: float = 0.04, stream: int = 0
) -> tuple[Tensor, Tensor]:
    """``2 * per_class`` points (float32 (N, 2), coordinates within about [-1, 1]) and int64 labels 0/1."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 7_919 * stream + 17)
    t_max = 2 * math.pi * turns
    t = t_max * torch.rand(2, per_class, generator=generator).sqrt()
    angle = t + math.pi * torch.arange(2, dtype=torch.float32)[:, None]
    radius = t / t_max
    points = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=-1)
    points = points + noise * torch.randn(points.shape, generator=generator)
    labels = torch.arange(2)[:, None].expand(2, per_class)
    return points.reshape(-1, 2).float(), labels.reshape(-1).clone()


class SpiralDataset(TensorImageDataset):
    """One split of the spiral, in memory (see the module docstring)."""

    class_names = ("arm0", "arm1")

    def __init__(self, split: str, per_class: int, seed: int, turns: float, noise: float) -> None:
        points, labels = make_spirals(per_class, seed, turns=turns, noise=noise, stream=STREAMS[split])
        self.hidden_labels = labels
        if split == "unlabeled":
            labels = torch.full_like(labels, -1)
        super().__init__(points, labels, num_classes=2, mean=(0.0, 0.0), std=(1.0, 1.0))
        self.split = split


class SpiralOptions(Options):
    """``data.options`` of ``data.dataset: spiral``."""

    labeled_per_class: int = Field(25, ge=1, description="training points per class (labelled)")
    unlabeled_per_class: int = Field(200, ge=1, description="unlabeled points per class")
    val_per_class: int = Field(1000, ge=1, description="validation points per class")
    turns: float = Field(2.5, gt=0, description="turns of each spiral arm")
    noise: float = Field(0.04, ge=0, description="Gaussian noise added to the points")


@REGISTRY.datasets.register("spiral", options=SpiralOptions)
def build_spiral(
    *, split: str, resolution: int, seed: int, path: str | None = None, options: SpiralOptions
) -> SpiralDataset:
    """Two interleaved 2-D spirals (vector data; ``resolution`` and ``path`` do not apply)."""
    check_split("spiral", split)
    sizes = {"train": options.labeled_per_class, "unlabeled": options.unlabeled_per_class,
             "val": options.val_per_class}
    return SpiralDataset(split, sizes[split], seed, options.turns, options.noise)
