"""Hard Augment's mining overhead for m = 4, 6, 8 against the same SimSiam training without mining, in one run.

    python benchmarks/hardaug_overhead.py [--steps 60] [--resolution 64] [--selection-resolution 32]
    python benchmarks/hardaug_overhead.py --quick      (a few steps at tiny sizes: checks the script)

For each m it prints the measured overhead, as a share of the step's cost,
in FLOPs (fvcore: mining forwards / (training + mining)) and in wall-clock
time (1 - baseline seconds per step / Hard Augment seconds per step, after
warm-up steps; evaluation excluded), next to eq. 3.11's prediction

    1 - M_ha = m r_sel^2 / (r^2 C + m r_sel^2),   C = 6 (two views, forward + backward).

The FLOPs share differs from eq. 3.11 only by the resolution-independent
parts (projector, predictor, pooling); wall-clock adds augmenting m views at
full resolution and the resize, which eq. 3.11 leaves out.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import torch

from hasten.config import validate_config
from hasten.engine import train
from hasten.hookspecs import hookimpl
from hasten.plugins import Plugin, installed_plugins, register_plugin
from hasten.state import State, StepOutput


class StepTimer(Plugin):
    """Seconds of every step, hasten_step_start to hasten_step_end (CUDA synchronised)."""

    name = "step_timer"
    durations: ClassVar[list[float]] = []

    @hookimpl(tryfirst=True)
    def hasten_step_start(self, state: State) -> None:
        if state.device.type == "cuda":
            torch.cuda.synchronize()
        self.started = time.perf_counter()

    @hookimpl(trylast=True)
    def hasten_step_end(self, state: State, output: StepOutput) -> None:
        if state.device.type == "cuda":
            torch.cuda.synchronize()
        StepTimer.durations.append(time.perf_counter() - self.started)


def make_config(args: argparse.Namespace, workdir: Path, num_views: int | None) -> dict[str, Any]:
    plugins: dict[str, Any] = {"step_timer": {}}
    if num_views is not None:
        plugins["hardaug"] = {"num_views": num_views, "selection_resolution": args.selection_resolution}
    name = f"hardaug-m{num_views}" if num_views else "baseline"
    return {
        "run": {"name": name, "max_steps": args.steps, "log_every": max(1, args.steps), "progress": False,
                "run_dir": str(workdir / name), "device": args.device, "seed": 0},
        "data": {"dataset": "procedural", "resolution": args.resolution, "batch_size": args.batch_size,
                 "options": {"train_size": max(args.batch_size * 4, 256), "val_size": 64}},
        "model": {"name": args.model, "options": {"width": args.width} if args.model == "small_resnet" else {}},
        "task": {"name": "ssl", "options": {"method": "simsiam", "knn_bank_size": 64}},
        "optim": {"lr": 0.05},
        "eval": {"every_steps": 10**9, "batch_size": 64},
        "tracking": {"enabled": False},
        "plugins": plugins,
    }


def measure(args: argparse.Namespace, workdir: Path, num_views: int | None) -> tuple[float, float]:
    """(median seconds per step after warm-up, hardaug FLOPs share of train + hardaug FLOPs)."""
    StepTimer.durations = []
    result = train(validate_config(make_config(args, workdir, num_views)))
    flops = result.state.flops if result.state is not None else None
    mining = flops.overhead.get("hardaug", 0.0) if flops is not None else 0.0
    share = mining / (flops.train + mining) if flops is not None and flops.train + mining > 0 else 0.0
    timed = StepTimer.durations[args.warmup :] or StepTimer.durations
    return statistics.median(timed), share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--selection-resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="small_resnet")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--views", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.resolution, args.selection_resolution = 4, 1, 16, 8
        args.batch_size, args.width = 16, 8

    from common import ensure_plugins  # plugins/hardaug usable without installing it

    ensure_plugins(["hardaug"])
    from hasten_hardaug.mining import overhead_fraction
    from hasten_hardaug.plugin import HardAugment

    register_plugin(StepTimer)
    if "hardaug" not in installed_plugins():
        register_plugin(HardAugment)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base_time, _ = measure(args, workdir, None)
        rows = [(m, *measure(args, workdir, m)) for m in args.views]
    from common import code_block, tee, write_section  # benchmarks/common.py: the RESULTS.md writer

    with tee() as report:
        _report(args, base_time, rows, overhead_fraction)
    write_section("hardaug_overhead", "Hard Augment mining overhead", code_block(report.text), quick=args.quick)


def _report(args: argparse.Namespace, base_time: float, rows: list[tuple[int, float, float]], overhead_fraction: Any
            ) -> None:
    print(f"# hardaug overhead: SimSiam, {args.model} width {args.width}, r = {args.resolution}, "
          f"r_sel = {args.selection_resolution}, batch {args.batch_size}, {args.steps} steps "
          f"({args.warmup} untimed); {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"baseline: {base_time * 1000:.1f} ms/step")
    print(f"{'m':>3} {'ms/step':>9} {'time overhead':>14} {'FLOPs overhead':>15} {'eq. 3.11':>9}")
    for m, seconds, share in rows:
        predicted = overhead_fraction(args.resolution, args.selection_resolution, m, 6.0)
        time_share = 1 - base_time / seconds
        print(f"{m:>3} {seconds * 1000:>9.1f} {time_share:>13.1%} {share:>14.1%} {predicted:>9.1%}")


if __name__ == "__main__":
    main()
