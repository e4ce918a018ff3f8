"""Memory layout on the CPU: seconds per step of the frontier study's own runs with `run.channels_last`
off and on, side by side in one run.

    python benchmarks/memory_format.py [--steps 80] [--repeats 2] [--threads 1] [--quick]

The runs are benchmarks/frontier.py's configs (converged scale: small_resnet at 32 px on Imagenette, 28 px
on Fashion-MNIST, batch 128, the study's one thread) and benchmarks/ubn_long.py's depth baseline (dispnet);
a dataset that is absent is skipped with its reason.
Steps after 20 warm-up steps are timed from inside the engine (set-up, data caching and FLOP counting
excluded); the layouts run interleaved, `--repeats` times each, and the best of each is compared. The
layout changes float rounding only (tests/test_engine.py: the losses agree), so the study's recipe hash
leaves it out.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import code_block, ensure_plugins, machine_info, tee, write_section
from frontier import recipes
from overhead import WARMUP_STEPS, StepClock
from ubn_long import OPTIMIZERS as UBN_OPTIMIZERS
from ubn_long import base_config as ubn_base_config

from hasten.config import validate_config
from hasten.engine import train

#: (dataset, recipe label) timed: the baseline everywhere, and selection (its scoring forward at 14 px, the
#: selected batch's training step; cool-down off so that every timed step selects) on Imagenette, and the UBN
#: study's dispnet on procedural depth (32 px, batch 32)
CASES = (("imagenette", "uniform"), ("imagenette", "selection + cool-down"), ("fashion_mnist", "uniform"),
         ("depth", "UBN study, BN baseline"))


def seconds_per_step(config: dict, steps: int, channels_last: bool, workdir: Path) -> float:
    run = {**config["run"], "max_steps": steps, "channels_last": channels_last, "checkpoint_every": None,
           "final_checkpoint": False, "run_dir": str(workdir / "run")}
    data = {**config["data"]}
    plugins = dict(config.get("plugins") or {})
    plugins.pop("cooldown", None)  # every timed step selects: no cool-down, warm-up inside the untimed steps
    if "selection" in plugins:
        plugins["selection"] = {**plugins["selection"], "warmup_steps": 1}
    full = {**config, "run": run, "data": data, "eval": {**config["eval"], "every_steps": 10**6},
            "tracking": {"enabled": False}, "plugins": plugins}
    clock = StepClock()
    result = train(validate_config(full), extra_builtins=[clock])
    assert result.steps == steps
    return (clock.end - clock.start) / (steps - WARMUP_STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="run.threads (the study's background runs: 1)")
    parser.add_argument("--quick", action="store_true", help="a short check on the embedded data (means nothing)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = WARMUP_STEPS + 4, 1
    ensure_plugins(["selection", "cooldown"])
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, label in CASES:
            if dataset == "depth":  # benchmarks/ubn_long.py's BN baseline (dispnet, procedural depth)
                config = {**ubn_base_config("depth", args.quick, args.threads), "optim": UBN_OPTIMIZERS["adam"]}
            else:
                found = recipes(dataset, args.quick, args.threads)
                if found is None:
                    skipped.append(dataset)
                    continue
                config = found[0][label]
            best = {False: float("inf"), True: float("inf")}
            for i in range(args.repeats):
                for layout in (False, True):
                    where = Path(tmp) / f"{dataset}-{label}-{layout}-{i}".replace(" ", "_")
                    best[layout] = min(best[layout], seconds_per_step(config, args.steps, layout, where))
            rows.append((dataset, label, best[False], best[True]))
            if args.quick:
                break
    with tee() as report:
        print(f"machine: {machine_info()}")
        print(f"steps per run: {args.steps} ({WARMUP_STEPS} warm-up), repeats: {args.repeats} (best of each), "
              f"run.threads {args.threads}")
        for dataset in dict.fromkeys(skipped):
            print(f"{dataset}: skipped (data absent; see benchmarks/frontier.py)")
        print(f"{'dataset':<14} {'recipe':<26} {'contiguous':>11} {'channels-last':>14} {'speed-up':>9}")
        for dataset, label, contiguous, channels_last in rows:
            print(f"{dataset:<14} {label:<26} {contiguous * 1e3:>8.1f} ms {channels_last * 1e3:>11.1f} ms "
                  f"{contiguous / channels_last:>8.2f}x")
    write_section("memory_format", "Memory layout on the CPU (run.channels_last)", code_block(report.text),
                  quick=args.quick)


if __name__ == "__main__":
    main()
