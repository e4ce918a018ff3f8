"""The data of a run: datasets built from the config, and their streams."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch

from hasten.batch import Batch, is_image_batch
from hasten.config import Config
from hasten.data.augment import ViewSpec
from hasten.data.stream import DataInfo, StepBatchSampler, eval_batches, torch_stream
from hasten.errors import UserError
from hasten.registry import REGISTRY


def build_dataset(
    name: str, *, split: str, resolution: int, seed: int, path: str | None, options: dict[str, Any], key: str
) -> Any:
    component = REGISTRY.datasets.get(name, key=f"{key}.dataset")
    return component.build(options, key=f"{key}.options", split=split, resolution=resolution, seed=seed, path=path)


def _is_vector_data(dataset: Any) -> bool:
    """Whether samples are (D,) vectors; probes one sample only when the dataset says source_resolution 0."""
    if getattr(dataset, "source_resolution", None) != 0 or len(dataset) == 0:
        return False
    return not is_image_batch(dataset.__getitems__([0])[0])


class DataModule:
    """Train / val / unlabeled datasets and the streams over them.

    ``batch_size`` here is the per-rank training batch size (the global
    ``data.batch_size`` divided by the world size).
    """

    def __init__(self, config: Config, *, rank: int = 0, world_size: int = 1) -> None:
        data = config.data
        self.config = config
        self.rank = rank
        self.world_size = world_size
        if data.batch_size % world_size:
            raise UserError(
                f"data.batch_size: {data.batch_size} is not divisible by the {world_size} processes; "
                "it is the global batch size, split evenly across ranks"
            )
        self.batch_size = data.batch_size // world_size
        seed = config.run.seed
        options = dict(data.options)
        if data.skip_corrupt:  # readers that decode files per sample (imagefolder) take it as an option
            # (config validation refused data.skip_corrupt for a dataset whose options lack it)
            options.setdefault("skip_corrupt", True)
        common: dict[str, Any] = {"resolution": data.resolution, "seed": seed, "path": data.path, "options": options}
        self.skipped_files: list[str] = []
        train = build_dataset(data.dataset, split="train", key="data", **common)
        self.val = build_dataset(data.dataset, split="val", key="data", **common)
        if data.train_samples is not None:
            from hasten.data.datasets import IndexedSubset

            if data.train_samples > len(train):
                raise UserError(f"data.train_samples: {data.train_samples} is more than the {len(train)} training "
                                f"samples of data.dataset {data.dataset!r}; allowed: 1 to {len(train)}")
            # Fixed generator seed: every run.seed trains on the same subset, so seeds vary only the training.
            chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: data.train_samples]
            train = IndexedSubset(train, chosen.sort().values)
        self.unlabeled: Any = None
        self.unlabeled_batch_size = 0
        if data.labeled_fraction is not None or data.labels_per_class is not None:
            from hasten.data.datasets import IndexedSubset, split_labeled

            labeled_idx, unlabeled_idx = split_labeled(
                train, labeled_fraction=data.labeled_fraction, labels_per_class=data.labels_per_class, seed=seed
            )
            # Every label kept (labeled_fraction 1.0) leaves no unlabeled stream.
            self.unlabeled = IndexedSubset(train, unlabeled_idx, drop_labels=True) if unlabeled_idx else None
            train = IndexedSubset(train, labeled_idx)
        if data.unlabeled is not None:
            spec = data.unlabeled
            if spec.dataset is not None:
                self.unlabeled = build_dataset(
                    spec.dataset,
                    split="unlabeled",
                    resolution=data.resolution,
                    seed=seed,
                    path=spec.path,
                    options=spec.options,
                    key="data.unlabeled",
                )
            elif self.unlabeled is None and data.labeled_fraction is None and data.labels_per_class is None:
                self.unlabeled = build_dataset(data.dataset, split="unlabeled", key="data.unlabeled", **common)
            global_unlabeled = spec.batch_size or data.batch_size
            if global_unlabeled % world_size:
                raise UserError(f"data.unlabeled.batch_size: {global_unlabeled} is not divisible by {world_size}")
            self.unlabeled_batch_size = global_unlabeled // world_size if self.unlabeled is not None else 0
        elif self.unlabeled is not None:
            self.unlabeled_batch_size = self.batch_size
        self.train = train
        if len(train) < data.batch_size:
            raise UserError(
                f"data.batch_size: {data.batch_size} is larger than the training set ({len(train)} samples)"
            )
        self.info = DataInfo(
            num_classes=int(getattr(train, "num_classes", 0)),
            channels=int(getattr(train, "channels", 3)),
            # Vector data (float (N, D) samples, source_resolution 0) has no spatial size: 0.
            resolution=0 if _is_vector_data(train) else data.resolution,
            mean=tuple(getattr(train, "mean", (0.5,) * int(getattr(train, "channels", 3)))),
            std=tuple(getattr(train, "std", (0.25,) * int(getattr(train, "channels", 3)))),
            train_size=len(train),
        )

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train) // self.config.data.batch_size)

    def train_stream(
        self,
        batch_size_for_step: Callable[[int], int],
        *,
        start_step: int,
        start_position: int,
        pin_memory: bool,
        loader_views: ViewSpec | None = None,
        step_params: Callable[[], tuple[int, float]] | None = None,
        device: torch.device | None = None,
    ) -> Iterator[Batch]:
        """One batch per step from ``start_step`` on, ``batch_size_for_step(step)`` samples each.

        For a loader that augments itself (``data.loader: dali``) the engine
        passes what it needs, explicitly: ``loader_views`` (the views to make,
        ``None``: images only), ``step_params`` (the resolution and magnitude of
        the step whose batch is pulled) and the run's ``device``. The torch
        back-end delivers images; the engine augments them on the device.
        """
        sampler = StepBatchSampler(
            len(self.train),
            batch_size_for_step,
            seed=self.config.run.seed,
            rank=self.rank,
            world_size=self.world_size,
            start_step=start_step,
            start_position=start_position,
        )
        if self.config.data.loader == "dali":
            from hasten.data.dali import dali_stream

            return dali_stream(
                self, self.train, sampler, views=loader_views, step_params=step_params, device=device
            )
        return torch_stream(
            self.train, sampler, num_workers=self.config.data.num_workers, pin_memory=pin_memory,
            seed=self.config.run.seed, on_skipped=self.record_skipped,
        )

    def unlabeled_stream(self, *, start_step: int, start_position: int, pin_memory: bool) -> Iterator[Batch] | None:
        if self.unlabeled is None or self.unlabeled_batch_size == 0:
            return None
        size = self.unlabeled_batch_size
        sampler = StepBatchSampler(
            len(self.unlabeled),
            lambda step: size,
            seed=self.config.run.seed + 7919,  # its own order, independent of the labeled stream
            rank=self.rank,
            world_size=self.world_size,
            start_step=start_step,
            start_position=start_position,
        )
        return torch_stream(
            self.unlabeled, sampler, num_workers=self.config.data.num_workers, pin_memory=pin_memory,
            seed=self.config.run.seed + 7919, on_skipped=self.record_skipped,
        )

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        return eval_batches(self.val, batch_size, self.rank, self.world_size, on_skipped=self.record_skipped)

    def train_subset_batches(self, batch_size: int, size: int) -> Iterator[Batch]:
        """``size`` training samples, evenly spaced over the training set and always the same, in order.

        Read like the validation set (no augmentation): the training-set metric that shows how far a run
        is from fitting its data (``eval.train_subset``).
        """
        from hasten.data.datasets import IndexedSubset

        total = len(self.train)
        count = min(size, total)
        subset = IndexedSubset(self.train, [i * total // count for i in range(count)])
        return eval_batches(subset, batch_size, self.rank, self.world_size, on_skipped=self.record_skipped)

    def record_skipped(self, files: list[str]) -> None:
        """Count unreadable files a dataset skipped (``data.skip_corrupt``) and name each once on stderr."""
        for file in files:
            if file not in self.skipped_files:
                self.skipped_files.append(file)
                print(f"warning: skipped unreadable data file {file} (data.skip_corrupt)", file=sys.stderr, flush=True)
