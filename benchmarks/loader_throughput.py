"""Loader throughput: the torch back-end vs DALI, decode + augment, against what a training step consumes.

    python benchmarks/loader_throughput.py [--device auto|cpu|cuda] [--data PATH] [--batch-size 128]
        [--steps 20] [--threads 4]
    python benchmarks/loader_throughput.py --quick      (a few tiny batches: checks the script)

Cases, at the resolutions the examples use:

* 32 px, in-memory arrays (``procedural``, the quickstart and SSL examples):
  no decoding, augmentation only;
* 128 px, an ImageFolder tree of JPEGs (imagenette2-128 when ``--data`` or
  ../shared/datasets has it, else a synthetic tree of 160 px JPEGs written to
  a temporary directory): decoding + resize to the source size + augmentation.

Each case runs with 2 views (SSL) and 6 views (Hard Augment's m) of the
SimCLR policy at magnitude 5. Rates are source images per second (an image
with 6 views counts once). Torch: the DataLoader (``--threads`` workers)
delivers uint8 batches, ``augment_batch`` makes the views on ``--device``.
DALI: the pipeline (``--threads`` CPU threads; mixed decoding and GPU
augmentation when the device is CUDA). The reference is the training step of
the default model (small_resnet, width 64) on 2 views per image, forward +
backward + SGD, on the same device: a loader slower than that rate starves
the step. Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hasten.data.augment import AugmentPolicy, augment_batch
from hasten.data.stream import StepBatchSampler, torch_stream
from hasten.models import build_model
from hasten.registry import REGISTRY
from hasten.state import Batch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenette2-128"


def synthetic_tree(root: Path, count: int, size: int = 160) -> Path:
    """``count`` smooth JPEGs in 10 classes (train split only)."""
    from torchvision.io import encode_jpeg

    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        folder = root / "train" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = torch.rand(1, 3, 12, 12, generator=generator) * 255
        image = F.interpolate(coarse, size=(size, size * 5 // 4), mode="bicubic", align_corners=False)
        image = image.clamp(0, 255).round().to(torch.uint8)[0]
        (folder / f"{i}.jpg").write_bytes(encode_jpeg(image, quality=90).numpy().tobytes())
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(batches: Iterator[Any], consume: Callable[[Any], int], steps: int, warmup: int, device: torch.device) -> float:
    """Source images per second over ``steps`` batches after ``warmup`` batches."""
    for _ in range(warmup):
        consume(next(batches))
    sync(device)
    started, images = time.perf_counter(), 0
    for _ in range(steps):
        images += consume(next(batches))
    sync(device)
    return images / (time.perf_counter() - started)


def torch_rate(dataset: Any, args: argparse.Namespace, device: torch.device, resolution: int, views: int) -> float:
    policy = AugmentPolicy.simclr()
    generator = torch.Generator(device=device).manual_seed(0)
    sampler = StepBatchSampler(len(dataset), lambda step: args.batch_size, seed=0)
    stream = torch_stream(dataset, sampler, num_workers=args.threads, pin_memory=device.type == "cuda")

    def consume(batch: Batch) -> int:
        images = batch.images.to(device, non_blocking=True)
        repeated = images.repeat(views, 1, 1, 1)
        augment_batch(repeated, resolution, 5.0, policy, generator, dataset.mean, dataset.std)
        return len(batch)

    return rate(stream, consume, args.steps, args.warmup, device)


def dali_rate(dataset: Any, args: argparse.Namespace, device: torch.device, resolution: int, views: int) -> float:
    from hasten.data.dali import DaliLoader, ViewSpec

    loader = DaliLoader(
        dataset, step_params=lambda: (resolution, 5.0),
        views=ViewSpec(AugmentPolicy.simclr(), views, tuple(dataset.mean), tuple(dataset.std)),
        device="gpu" if device.type == "cuda" else "cpu",
        device_id=(device.index or 0) if device.type == "cuda" else None,
        threads=args.threads, max_batch=args.batch_size,
    )
    sampler = StepBatchSampler(len(dataset), lambda step: args.batch_size, seed=0)

    def consume(batch: Batch) -> int:
        batch.views = [v.to(device, non_blocking=True) for v in batch.views]
        return len(batch)

    return rate(loader.stream(sampler), consume, args.steps, args.warmup, device)


def step_rate(args: argparse.Namespace, device: torch.device, resolution: int, views: int = 2) -> float:
    """Images per second of the default model's training step on ``views`` views per image."""
    model = build_model("small_resnet", num_classes=10, in_channels=3, options={}).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    inputs = torch.randn(args.batch_size * views, 3, resolution, resolution, device=device)
    labels = torch.randint(0, 10, (args.batch_size * views,), device=device)

    def forever() -> Iterator[None]:
        while True:
            yield None

    def consume(_: None) -> int:
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return args.batch_size

    return rate(forever(), consume, args.steps, args.warmup, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data", type=Path, default=None, help="an ImageFolder tree (default: imagenette2-128)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="DataLoader workers and DALI CPU threads")
    parser.add_argument("--views", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--quick", action="store_true", help="a few tiny batches: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.steps, args.warmup, args.threads = 8, 2, 1, 0
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    workdir = Path(tempfile.mkdtemp(prefix="loader-throughput-"))
    folder = args.data or (SHARED if SHARED.is_dir() and not args.quick else None)
    if folder is None:
        folder = synthetic_tree(workdir / "jpegs", count=max(4 * args.batch_size, 32))
    cases = [
        ("procedural (arrays)", 32, REGISTRY.datasets.get("procedural")(
            split="train", resolution=32, seed=0, path=None, train_size=max(8 * args.batch_size, 64))),
        (f"imagefolder JPEG ({folder.name})", 128, REGISTRY.datasets.get("imagefolder")(
            split="train", resolution=128, seed=0, path=str(folder))),
    ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    from common import tee, write_section  # benchmarks/common.py: the RESULTS.md writer

    with tee() as report:
        _table(args, device, name, cases)
    write_section("loader_throughput", "Loader throughput: torch vs DALI", report.text, quick=args.quick)


def _table(args: argparse.Namespace, device: torch.device, name: str, cases: list[Any]) -> None:
    print(f"device: {device} ({name}); batch {args.batch_size}; {args.threads} threads/workers; "
          f"{args.steps} timed batches after {args.warmup}")
    print()
    print("| data | r | views | torch img/s | DALI img/s | DALI / torch | train step img/s (2 views) |")
    print("|---|---|---|---|---|---|---|")
    for label, resolution, dataset in cases:
        consumption = step_rate(args, device, resolution)
        for views in args.views:
            ours = dali_rate(dataset, args, device, resolution, views)
            theirs = torch_rate(dataset, args, device, resolution, views)
            print(f"| {label} | {resolution} | {views} | {theirs:.0f} | {ours:.0f} | {ours / theirs:.2f} | "
                  f"{consumption:.0f} |", flush=True)


if __name__ == "__main__":
    main()
