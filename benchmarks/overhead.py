"""Engine overhead: step time of `hasten train` (all built-ins on: schedule,
FLOP accounting, progress, MLflow tracking) against a hand-written PyTorch
loop doing the same work (same model, data order, augmentation), in one run.

    python benchmarks/overhead.py [--steps 300] [--repeats 3] [--quick]

Prints the ratio of seconds per step (after 20 warm-up steps; set-up such as
data rendering, FLOP counting and opening the MLflow run is excluded) engine /
hand-written (target <= 1.03). Both loops run
interleaved, `--repeats` times each, and the best of each is compared, so
machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hasten.config import validate_config
from hasten.data.augment import augment_batch
from hasten.data.module import DataModule
from hasten.data.stream import StepBatchSampler, torch_stream
from hasten.engine import train
from hasten.hookspecs import hookimpl
from hasten.models import build_model
from hasten.plugins import Plugin
from hasten.state import State
from hasten.tasks.base import Task


def make_config(steps: int, workdir: Path, tracking: bool) -> dict:
    return {
        "run": {"name": "overhead", "max_steps": steps, "log_every": 10, "run_dir": str(workdir / "run"),
                "progress": True},
        "data": {"dataset": "procedural", "resolution": 32, "batch_size": 128,
                 "options": {"train_size": 5000, "val_size": 200}},
        "model": {"name": "small_resnet"},
        "optim": {"lr": 0.1, "nesterov": True},
        "eval": {"every_steps": 10**6, "batch_size": 200},
        "tracking": {"enabled": tracking, "uri": f"sqlite:///{workdir / 'mlruns.db'}"},
    }


WARMUP_STEPS = 20  # excluded from the timing in both loops (allocator, first-call costs)


class StepClock(Plugin):
    """Times the steps after the warm-up, from inside the engine."""

    name = "step_clock"

    def __init__(self) -> None:
        super().__init__()
        self.start = 0.0
        self.end = 0.0

    @hookimpl(tryfirst=True)
    def hasten_step_start(self, state: State) -> None:
        if state.step == WARMUP_STEPS:
            self.start = time.perf_counter()

    @hookimpl(trylast=True)
    def hasten_step_end(self, state: State, output: object) -> None:
        if state.step == state.total_steps - 1:
            self.end = time.perf_counter()


def engine_time(steps: int, workdir: Path) -> float:
    """Seconds per step of the engine with every built-in on."""
    config = validate_config(make_config(steps, workdir, tracking=True))
    clock = StepClock()
    result = train(config, extra_builtins=[clock])
    assert result.steps == steps
    return (clock.end - clock.start) / (steps - WARMUP_STEPS)


def hand_written_time(steps: int, workdir: Path) -> float:
    """Seconds per step of a plain loop doing the same work."""
    config = validate_config(make_config(steps, workdir, tracking=False))
    data = DataModule(config)
    torch.manual_seed(0)
    model = build_model("small_resnet", num_classes=data.info.num_classes, in_channels=3, options={})
    policy = Task(config, data.info).augment_policy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    sampler = StepBatchSampler(len(data.train), lambda step: 128, seed=0)
    stream = torch_stream(data.train, sampler, num_workers=0, pin_memory=False)
    start = 0.0
    for step in range(steps):
        if step == WARMUP_STEPS:
            start = time.perf_counter()
        batch = next(stream)
        x = augment_batch(batch.images, 32, 5.0, policy, generator, data.info.mean, data.info.std)
        for group in opt.param_groups:
            group["lr"] = 0.5 * 0.1 * (math.cos(math.pi * step / steps) + 1)
        loss = F.cross_entropy(model(x), batch.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / (steps - WARMUP_STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a short check of the script (its ratio means nothing)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = WARMUP_STEPS + 10, 1
    engine, manual = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            manual.append(hand_written_time(args.steps, Path(tmp) / f"m{i}"))
            engine.append(engine_time(args.steps, Path(tmp) / f"e{i}"))
    ratio = min(engine) / min(manual)
    from common import code_block, tee, write_section  # benchmarks/common.py: the RESULTS.md writer

    with tee() as report:
        print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}")
        print(f"steps per run: {args.steps}, repeats: {args.repeats} (best of each)")
        print(f"hand-written loop: {min(manual) * 1e3:.2f} ms/step")
        print(f"hasten engine:     {min(engine) * 1e3:.2f} ms/step")
        print(f"ratio engine / hand-written: {ratio:.3f}  (target <= 1.03)")
    write_section("overhead", "Engine overhead (hasten train vs a hand-written loop)", code_block(report.text),
                  quick=args.quick)


if __name__ == "__main__":
    main()
