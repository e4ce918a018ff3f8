"""Training data streams: a step-indexed batch sampler and the torch back-end.

The training stream is an endless sequence of per-epoch permutations of the
dataset (seeded by ``seed`` and the epoch), sharded by rank: every sample is
seen once per epoch, each rank sees a disjoint share. The batch for step ``s``
holds the next ``batch_size(s)`` indices, where ``batch_size`` is asked of the
plugins (``hasten_batch_size``) *when the sampler forms the batch*, so the
answer is exact however far the loader prefetches. A stream position is the
number of indices already delivered on this rank, which is all a resume needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from hasten.batch import Batch
from hasten.errors import DataError, UserError


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of ``epoch`` (identical on every rank)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an epoch: every ``world_size``-th sample, equal lengths."""
    usable = (order.numel() // world_size) * world_size
    return order[rank:usable:world_size]


class StepBatchSampler(Sampler[list[int]]):
    """Yields one list of dataset indices per training step, forever."""

    def __init__(
        self,
        num_samples: int,
        batch_size_for_step: Callable[[int], int],
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        start_position: int = 0,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size_for_step = batch_size_for_step
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        self.start_position = start_position
        self.per_epoch = num_samples // world_size
        if self.per_epoch == 0:
            raise ValueError(f"dataset of {num_samples} samples cannot be sharded over {world_size} ranks")

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        epoch, offset = divmod(self.start_position, self.per_epoch)
        order = shard(epoch_permutation(self.num_samples, self.seed, epoch), self.rank, self.world_size)
        while True:
            wanted = self.batch_size_for_step(step)
            indices: list[int] = []
            while len(indices) < wanted:
                take = order[offset : offset + wanted - len(indices)]
                indices.extend(take.tolist())
                offset += take.numel()
                if offset >= self.per_epoch:
                    epoch, offset = epoch + 1, 0
                    order = shard(epoch_permutation(self.num_samples, self.seed, epoch), self.rank, self.world_size)
            yield indices
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len()
        raise TypeError("a step stream has no length")


class IndexedDataset(Dataset[Any]):
    """Wraps a dataset so batches also carry their indices (and extras).

    A dataset that skips unreadable files (``data.skip_corrupt``) lists them in
    ``corrupt_files``; each batch carries the files newly skipped while it was
    fetched (``"skipped"``), so the count survives DataLoader worker processes.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._reported = 0  # entries of dataset.corrupt_files already reported (per process)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:  # pragma: no cover - batched path is used
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        in_worker = get_worker_info() is not None
        try:
            return self._fetch(indices)
        except OSError as exc:  # a data file missing or unreadable that the dataset did not name itself
            if not in_worker:
                raise DataError(f"cannot read data: {exc}") from None
            return {"error": f"cannot read data: {exc}", "user_error": True}
        except Exception as exc:
            if not in_worker:
                raise
            # In a DataLoader worker an exception would reach the user wrapped in torch's re-raise (the
            # worker's traceback inside the main one). Send its message; the main process raises it.
            if isinstance(exc, UserError):
                return {"error": str(exc), "user_error": True}
            return {"error": f"{type(exc).__name__} in a DataLoader worker: {exc}", "user_error": False}

    def _fetch(self, indices: list[int]) -> dict[str, Any]:
        if hasattr(self.dataset, "__getitems__"):
            fetched = self.dataset.__getitems__(indices)
        else:
            items = [self.dataset[i] for i in indices]
            fetched = (torch.stack([torch.as_tensor(x[0]) for x in items]), torch.tensor([int(x[1]) for x in items]))
        images, labels = fetched[0], fetched[1]
        extras = fetched[2] if len(fetched) > 2 else {}
        corrupt = getattr(self.dataset, "corrupt_files", None)
        skipped: list[str] = []
        if corrupt is not None and len(corrupt) > self._reported:
            skipped = list(corrupt[self._reported :])
            self._reported = len(corrupt)
        return {
            "images": images,
            "labels": torch.as_tensor(labels, dtype=torch.long),
            "indices": torch.as_tensor(indices, dtype=torch.long),
            "extras": extras,
            "skipped": skipped,
        }


def _keep(batch: Any) -> Any:
    return batch


def to_batch(item: dict[str, Any]) -> Batch:
    return Batch(images=item["images"], labels=item["labels"], indices=item["indices"], extras=dict(item["extras"]))


@dataclass
class DataInfo:
    """What models and tasks need to know about the data."""

    num_classes: int
    channels: int
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int

    @property
    def is_vector(self) -> bool:
        """Whether the data are vectors (D,) rather than images (``resolution`` 0)."""
        return self.resolution == 0


def torch_stream(
    dataset: Any,
    sampler: StepBatchSampler,
    *,
    num_workers: int,
    pin_memory: bool,
    seed: int = 0,
    on_skipped: Callable[[list[str]], None] | None = None,
) -> Iterator[Batch]:
    """Batches from the torch DataLoader back-end (uint8 images on the host).

    The loader draws its workers' base seed from its own generator (seeded by
    ``seed``), not from torch's global one: creating the iterator must not move
    the global random state, or a resumed run would diverge from an
    uninterrupted one. Datasets fetch deterministically by index (augmentation
    runs on the device with ``state.generator``), so workers need no randomness.
    """
    loader = DataLoader(
        IndexedDataset(dataset),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=_keep,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
    for item in loader:
        if "error" in item:
            raise (DataError if item["user_error"] else RuntimeError)(item["error"])
        if item["skipped"] and on_skipped is not None:
            on_skipped(item["skipped"])
        yield to_batch(item)


def eval_batches(
    dataset: Any,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    on_skipped: Callable[[list[str]], None] | None = None,
) -> Iterator[Batch]:
    """This rank's share of ``dataset`` in order (evaluation)."""
    wrapped = IndexedDataset(dataset)
    indices = list(range(rank, len(dataset), world_size))
    for start in range(0, len(indices), batch_size):
        item = wrapped.__getitems__(indices[start : start + batch_size])
        if item["skipped"] and on_skipped is not None:
            on_skipped(item["skipped"])
        yield to_batch(item)
