"""The dataset contract, in-memory datasets, subsets and labeled/unlabeled splits.

Every reader returns an :class:`ImageDataset`: uint8 (C, H, W) images at one
square ``source_resolution`` and int labels (-1 = no label). ``__getitems__``
fetches a whole batch at once; torch's DataLoader calls it with the batch's
indices, so use :func:`passthrough_collate` as the loader's ``collate_fn``.

Vector data (``npz`` with (N, D) float arrays) follows the same contract with
float (D,) "images", ``channels == D`` and ``source_resolution == 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from hasten.batch import is_image_batch
from hasten.errors import UserError, did_you_mean

SPLITS = ("train", "val", "unlabeled")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDataset(Dataset[tuple[Tensor, int]]):
    """Base class of every hasten dataset (see the module docstring for the contract)."""

    num_classes: int = 0
    channels: int = 3
    source_resolution: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        raise NotImplementedError

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Batched fetch: (N, C, H, W) uint8 images and (N,) int64 labels."""
        items = [self[int(i)] for i in indices]
        return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])

    @property
    def targets(self) -> Tensor:
        """(len,) int64 labels of every sample (-1 = none), without decoding images."""
        return torch.tensor([self[i][1] for i in range(len(self))], dtype=torch.int64)


class TensorImageDataset(ImageDataset):
    """A dataset held in memory: one tensor of images, one of labels.

    ``__getitems__`` indexes both tensors once per batch.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.num_classes = num_classes
        if not is_image_batch(images):  # vector data
            self.channels, self.source_resolution = int(images.shape[1]), 0
        else:
            self.channels, self.source_resolution = int(images.shape[1]), int(images.shape[-1])
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[rows], self.labels[rows]

    @property
    def targets(self) -> Tensor:
        return self.labels


class IndexedSubset(ImageDataset):
    """The samples ``indices`` of ``dataset``, keeping its contract; ``drop_labels`` makes every label -1."""

    def __init__(self, dataset: ImageDataset, indices: Sequence[int] | Tensor, drop_labels: bool = False) -> None:
        self.dataset = dataset
        self.indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if len(self.indices) and (int(self.indices.min()) < 0 or int(self.indices.max()) >= len(dataset)):
            raise IndexError(f"subset indices out of range for a dataset of {len(dataset)}")
        self.drop_labels = drop_labels
        self.num_classes = dataset.num_classes
        self.channels = dataset.channels
        self.source_resolution = dataset.source_resolution
        self.mean, self.std = dataset.mean, dataset.std

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[int(self.indices[index])]
        return image, -1 if self.drop_labels else label

    def __getitems__(self, indices: Sequence[int]) -> tuple[Any, ...]:
        """(images, labels) or, when the dataset has extras (e.g. depth maps), (images, labels, extras).

        ``drop_labels`` removes the extras too: an unlabeled frame has no depth map either.
        """
        rows = self.indices[torch.as_tensor(indices, dtype=torch.int64)]
        fetched = self.dataset.__getitems__(rows.tolist())
        images, labels = fetched[0], fetched[1]
        if self.drop_labels:
            return images, torch.full_like(labels, -1)
        return (images, labels, fetched[2]) if len(fetched) > 2 else (images, labels)

    @property
    def targets(self) -> Tensor:
        if self.drop_labels:
            return torch.full((len(self),), -1, dtype=torch.int64)
        return self.dataset.targets[self.indices]


def passthrough_collate(batch: Any) -> tuple[Tensor, Tensor]:
    """DataLoader ``collate_fn``: keep a batch from ``__getitems__``, stack a list of (image, label) pairs."""
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], Tensor):
        return batch[0], batch[1]
    images, labels = zip(*batch, strict=True)
    return torch.stack(list(images)), torch.as_tensor(labels, dtype=torch.int64)


def split_labeled(
    dataset: ImageDataset,
    labeled_fraction: float | None,
    labels_per_class: int | None,
    seed: int,
) -> tuple[list[int], list[int]]:
    """Deterministic stratified split into (labeled, unlabeled) sorted index lists.

    Give exactly one of ``labeled_fraction`` (per class, rounded, at least one
    sample per class when the fraction is > 0) or ``labels_per_class``.
    Samples that already have no label (-1) always go to the unlabeled side.
    """
    if (labeled_fraction is None) == (labels_per_class is None):
        raise UserError("give exactly one of labeled_fraction and labels_per_class")
    if labeled_fraction is not None and not 0.0 <= labeled_fraction <= 1.0:
        raise UserError(f"labeled_fraction must be in [0, 1], got {labeled_fraction}")
    if labels_per_class is not None and labels_per_class < 0:
        raise UserError(f"labels_per_class must be >= 0, got {labels_per_class}")
    targets = getattr(dataset, "targets", None)
    if not isinstance(targets, Tensor):  # a plain torch Dataset: read labels item by item
        targets = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    labeled: list[Tensor] = []
    for cls in torch.unique(targets[targets >= 0]).tolist():
        members = torch.nonzero(targets == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        if labels_per_class is not None:
            if labels_per_class > len(members):
                raise UserError(
                    f"labels_per_class {labels_per_class} exceeds the {len(members)} samples of class {cls}"
                )
            count = labels_per_class
        else:
            assert labeled_fraction is not None
            count = round(labeled_fraction * len(members))
            count = max(count, 1) if labeled_fraction > 0 else 0
        labeled.append(members[:count])
    chosen = torch.cat(labeled) if labeled else torch.empty(0, dtype=torch.int64)
    is_labeled = torch.zeros(len(targets), dtype=torch.bool)
    is_labeled[chosen] = True
    return torch.nonzero(is_labeled).flatten().tolist(), torch.nonzero(~is_labeled).flatten().tolist()


# ---- helpers shared by the readers -----------------------------------------


def check_split(dataset: str, split: str) -> None:
    if split not in SPLITS:
        raise UserError(
            f"dataset {dataset!r}: unknown split {split!r}{did_you_mean(split, SPLITS)}; allowed: {', '.join(SPLITS)}"
        )


def resize_square_uint8(images: Tensor, resolution: int, chunk: int = 1024) -> Tensor:
    """Resize the shorter side to ``resolution`` (bilinear, antialiased), centre-crop to a square; uint8 in and out."""
    height, width = images.shape[-2:]
    if height == width == resolution:
        return images
    scale = resolution / min(height, width)
    new_h, new_w = max(resolution, round(height * scale)), max(resolution, round(width * scale))
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    out = torch.empty((*images.shape[:-2], resolution, resolution), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):  # bounded float memory for big arrays
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        crop = part[..., top : top + resolution, left : left + resolution]
        out[start : start + chunk] = crop.round().clamp(0, 255).to(torch.uint8)
    return out


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units of uint8 (N, C, H, W) images, or per-feature of float (N, D)."""
    if not is_image_batch(images):
        data = images.double()
        return tuple(data.mean(0).tolist()), tuple(data.std(0).clamp_min(1e-6).tolist())
    # Exact statistics from per-channel value histograms, in chunks: no float copy of the whole set.
    counts = torch.zeros(images.shape[1], 256, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].transpose(0, 1).reshape(images.shape[1], -1).long()
        for channel in range(images.shape[1]):
            counts[channel] += torch.bincount(part[channel], minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum(1)
    mean = (counts * values).sum(1) / total
    var = (counts * (values - mean[:, None]) ** 2).sum(1) / (total - 1).clamp_min(1)
    # Constant channels must not divide by zero in normalisation.
    return tuple(mean.tolist()), tuple(var.sqrt().clamp_min(1e-6).tolist())
