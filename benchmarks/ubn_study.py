"""UBN studies (docs/methods.md section 1): the 5-seed spiral table and the labeled-fraction studies.

1. Spiral: BN vs UBN (two_step, joint) held-out accuracy over seeds 0-4
   (examples/ubn_spiral.yaml).
2. Labeled fraction on Imagenette (../shared/datasets/imagenette2-128, or
   $HASTEN_SHARED_DATA) at a CPU-sized resolution: val top-1 of BN (labeled
   frames only) vs UBN (two_step, the rest of the train split as the unlabeled
   stream) for each fraction. 100% leaves no unlabeled images: UBN = BN there.
3. The same on the embedded depth data (procedural_depth, dispnet): delta < 1.25
   and abs-rel.
4. constant_statistics: where two_step's deficit on CNNs comes from. BN, two_step
   with the labeled batch standing in for the unlabeled one (BN's own statistics,
   held constant: no gradient through mu, sigma), two_step and joint, with SGD 0.1
   and with the research's Adam 2e-4.

    python benchmarks/ubn_study.py                 # everything (hours on 2 CPU cores)
    python benchmarks/ubn_study.py --quick         # a smoke test of every part (about a minute)
    python benchmarks/ubn_study.py --parts spiral depth --json results.json

Prints Markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from common import ensure_plugins, write_section  # first: puts core/ on sys.path in a checkout without install

from hasten.config import read_file, validate_config
from hasten.engine import train

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HASTEN_SHARED_DATA") or REPO.parent / "shared" / "datasets")


def run(raw: dict[str, Any], workdir: Path) -> dict[str, float]:
    """Train one config (tracking and progress off, a fresh run dir) and return its final metrics."""
    raw = copy.deepcopy(raw)
    raw["run"].update(progress=False, checkpoint_every=None, run_dir=tempfile.mkdtemp(dir=workdir))
    raw["tracking"] = {"enabled": False}
    started = time.perf_counter()
    result = train(validate_config(raw))
    metrics = dict(result.metrics)
    metrics["wall_s"] = time.perf_counter() - started
    tail = result.losses[-50:]
    metrics["train_loss_tail"] = sum(tail) / max(1, len(tail))
    return metrics


def spiral(seeds: list[int], steps: int | None, workdir: Path) -> dict[str, list[float]]:
    base = read_file(REPO / "examples" / "ubn_spiral.yaml")
    base["eval"]["every_steps"] = 10**6
    if steps is not None:
        base["run"]["max_steps"] = steps
    table: dict[str, list[float]] = {"BN": [], "UBN two_step": [], "UBN joint": []}
    for seed in seeds:
        for name, plugins in (("BN", None), ("UBN two_step", {"ubn": {}}), ("UBN joint", {"ubn": {"mode": "joint"}})):
            raw = copy.deepcopy(base)
            raw["run"]["seed"] = seed
            raw.pop("plugins", None)
            if plugins:
                raw["plugins"] = plugins
            table[name].append(run(raw, workdir)["val/acc1"])
            print(f"  spiral seed {seed} {name}: {table[name][-1]:.3f}", flush=True)
    return table


def imagenette_base(quick: bool, steps: int | None, width: int = 32) -> dict[str, Any]:
    return {
        "run": {"name": "ubn-imagenette", "seed": 0, "max_steps": steps or (3 if quick else 2000), "log_every": 50},
        "data": {"dataset": "imagefolder", "path": str(SHARED / "imagenette2-128"), "resolution": 32,
                 "batch_size": 16 if quick else 64, "options": {"cache": True}},
        "model": {"name": "small_resnet", "options": {"width": 8 if quick else width}},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},
        "eval": {"batch_size": 256, "every_steps": 10**6, "max_batches": 1 if quick else None},
    }


def depth_base(quick: bool, steps: int | None) -> dict[str, Any]:
    return {
        "run": {"name": "ubn-depth", "seed": 0, "max_steps": steps or (3 if quick else 1500), "log_every": 50},
        "data": {"dataset": "procedural_depth", "resolution": 32, "batch_size": 8 if quick else 32,
                 "options": {"train_size": 256 if quick else 4000, "val_size": 64 if quick else 500}},
        "model": {"name": "dispnet", "options": {"widths": [8, 16, 32, 64] if quick else [16, 32, 64, 128]}},
        "task": {"name": "depth"},
        "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0},
        "schedule": {"name": "cosine"},
        "eval": {"batch_size": 128, "every_steps": 10**6, "metric": "val/delta1"},
    }


def fraction_study(
    base: dict[str, Any], fractions: list[float], seeds: list[int], metrics: list[str], workdir: Path, label: str,
    modes: Sequence[str] = ("two_step",),
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """fraction -> method ("BN", "UBN <mode>") -> metric -> one value per seed."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for fraction in fractions:
        row: dict[str, dict[str, list[float]]] = {}
        methods = [("BN", None)] + ([(f"UBN {m}", {"ubn": {"mode": m}}) for m in modes] if fraction < 1.0 else [])
        for name, plugins in methods:
            values: dict[str, list[float]] = {m: [] for m in metrics}
            for seed in seeds:
                raw = copy.deepcopy(base)
                raw["run"]["seed"] = seed
                if fraction < 1.0:
                    raw["data"]["labeled_fraction"] = fraction
                if plugins:
                    raw["plugins"] = plugins
                result = run(raw, workdir)
                for m in metrics:
                    values[m].append(result[m])
                shown = ", ".join(f"{m} {result[m]:.4f}" for m in metrics)
                print(f"  {label} {fraction:.0%} {name} seed {seed}: {shown} ({result['wall_s']:.0f} s)", flush=True)
            row[name] = values
        out[f"{fraction:g}"] = row
    return out


def _cell(values: list[float]) -> str:
    """Median, and the range over seeds when there are several."""
    median = f"{statistics.median(values):.4f}"
    return median if len(values) == 1 else f"{median} ({min(values):.3f}-{max(values):.3f})"


def markdown_fraction(study: dict[str, dict[str, dict[str, list[float]]]], metrics: list[str]) -> str:
    """One row per fraction: BN, then each UBN mode and its gain (median over seeds) per metric."""
    methods = sorted({name for row in study.values() for name in row if name != "BN"})
    head = "| labeled | " + " | ".join(
        f"BN {m} | " + " | ".join(f"{name} {m} | gain" for name in methods) for m in metrics
    ) + " |"
    lines = [head, "|" + "---|" * (1 + len(metrics) * (1 + 2 * len(methods)))]
    for fraction, row in study.items():
        cells = []
        for m in metrics:
            bn = statistics.median(row["BN"][m])
            cells.append(_cell(row["BN"][m]))
            for name in methods:
                if name in row:
                    cells += [_cell(row[name][m]), f"{statistics.median(row[name][m]) - bn:+.4f}"]
                else:
                    cells += ["= BN (no unlabeled images)", "-"]
        lines.append(f"| {float(fraction):.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@contextmanager
def labeled_as_unlabeled() -> Iterator[None]:
    """Inside: UBN's "unlabeled" batch is a copy of the labeled batch. two_step then normalises with
    exactly the statistics BN uses (those of [x; x] equal those of x) but as constants: the only
    difference from BN left is that no gradient flows through mu and sigma."""
    from hasten_ubn.ubn import UBNModel

    original = UBNModel.forward

    def forward(self: Any, x: torch.Tensor) -> Any:
        self.set_unlabeled(x.detach().clone())
        return original(self, x)

    UBNModel.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        UBNModel.forward = original  # type: ignore[method-assign]


def constant_statistics_base(quick: bool, steps: int | None) -> dict[str, Any]:
    return {
        "run": {"name": "ubn-constant-stats", "seed": 0, "max_steps": steps or (3 if quick else 300),
                "log_every": 25},
        "data": {"dataset": "procedural", "resolution": 32, "batch_size": 16 if quick else 64,
                 "labeled_fraction": 0.2,
                 "options": {"train_size": 200 if quick else 2500, "val_size": 64 if quick else 500}},
        "model": {"name": "small_resnet", "options": {"width": 8 if quick else 16}},
        "schedule": {"name": "cosine"},
        "eval": {"batch_size": 250, "every_steps": 10**6},
    }


CONSTANT_STATS_OPTIMIZERS = {
    "SGD lr 0.1": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "AdamW lr 2e-4 (the research's Adam 2e-4)": {"name": "adamw", "lr": 2e-4, "weight_decay": 0.0},
}


def constant_statistics(quick: bool, steps: int | None, seeds: list[int], workdir: Path) -> list[str]:
    """Does two_step's deficit come from the combined batch or from holding the statistics constant?

    Per optimiser: BN; two_step with the labeled batch as its own unlabeled batch (BN's statistics,
    as constants); two_step with real unlabeled images; joint. Training loss (mean of the last 50
    steps) and val top-1, median over seeds.
    """
    base = constant_statistics_base(quick, steps)
    variants = [("BN", None, False), ("two_step, labeled batch as the unlabeled one", "two_step", True),
                ("two_step", "two_step", False), ("joint", "joint", False)]
    lines = ["| optimiser | variant | train loss (last 50 steps) | val top-1 |", "|---|---|---|---|"]
    for optimiser, optim in CONSTANT_STATS_OPTIMIZERS.items():
        for name, mode, self_stats in variants:
            losses, accuracies = [], []
            for seed in seeds:
                raw = copy.deepcopy(base)
                raw["run"]["seed"] = seed
                raw["optim"] = dict(optim)
                if mode is not None:
                    raw["plugins"] = {"ubn": {"mode": mode}}
                with labeled_as_unlabeled() if self_stats else nullcontext():
                    metrics = run(raw, workdir)
                losses.append(metrics["train_loss_tail"])
                accuracies.append(metrics["val/acc1"])
                print(f"  constant statistics {optimiser} {name} seed {seed}: loss {losses[-1]:.3f}, "
                      f"val/acc1 {accuracies[-1]:.3f} ({metrics['wall_s']:.0f} s)", flush=True)
            lines.append(f"| {optimiser} | {name} | {statistics.median(losses):.3f} | "
                         f"{statistics.median(accuracies):.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every part runs")
    parser.add_argument("--parts", nargs="+", default=["spiral", "imagenette", "depth", "constant_statistics"],
                        choices=["spiral", "imagenette", "depth", "constant_statistics"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0-4 (spiral), 0 (studies)")
    parser.add_argument("--steps", type=int, default=None, help="override max_steps of every run")
    parser.add_argument("--width", type=int, default=32, help="small_resnet width of the Imagenette study")
    parser.add_argument("--modes", nargs="+", default=["two_step"], choices=["two_step", "joint"],
                        help="UBN modes compared with BN in the labeled-fraction studies")
    parser.add_argument("--json", default=None, help="write the raw results here")
    parser.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    args = parser.parse_args(argv)
    ensure_plugins(["ubn"])  # plugins/ubn usable without installing it
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="ubn-study-"))
    results: dict[str, Any] = {}
    report: list[str] = []
    sections: dict[str, int] = {}  # part -> where its lines start in `report`

    if "spiral" in args.parts:
        seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
        table = spiral(seeds, args.steps or (20 if args.quick else None), workdir)
        results["spiral"] = table
        sections["spiral"] = len(report)
        report.append(f"### Spiral, held-out accuracy, seeds {seeds}\n")
        report.append("| method | " + " | ".join(f"seed {s}" for s in seeds) + " | median |")
        report.append("|---|" + "---|" * (len(seeds) + 1))
        for name, values in table.items():
            cells = " | ".join(f"{v:.3f}" for v in values)
            report.append(f"| {name} | {cells} | {statistics.median(values):.3f} |")
        report.append("")

    fractions = [*[f for f in args.fractions if f < 1.0][:1], 1.0] if args.quick else args.fractions
    seeds = args.seeds or [0]
    if "imagenette" in args.parts:
        if not (SHARED / "imagenette2-128" / "train").is_dir():
            print(f"skipping imagenette: {SHARED / 'imagenette2-128'} not found")
        else:
            metrics = ["val/acc1"]
            base = imagenette_base(args.quick, args.steps, args.width)
            study = fraction_study(base, fractions, seeds, metrics, workdir, "imagenette", args.modes)
            results["imagenette"] = study
            sections["imagenette"] = len(report)
            report.append(f"### Imagenette 32 px, small_resnet width {base['model']['options']['width']}, "
                          f"{base['run']['max_steps']} steps, val top-1 "
                          f"(median of seeds {seeds}, range in brackets)\n")
            report.append(markdown_fraction(study, metrics) + "\n")
    if "depth" in args.parts:
        metrics = ["val/delta1", "val/abs_rel"]
        base = depth_base(args.quick, args.steps)
        study = fraction_study(base, fractions, seeds, metrics, workdir, "depth", args.modes)
        results["depth"] = study
        sections["depth"] = len(report)
        report.append(f"### procedural_depth 32 px, dispnet, {base['run']['max_steps']} steps "
                      f"(median of seeds {seeds}, range in brackets)\n")
        report.append(markdown_fraction(study, metrics) + "\n")

    if "constant_statistics" in args.parts:
        sections["constant_statistics"] = len(report)
        cs_base = constant_statistics_base(args.quick, args.steps)
        report.append(f"### two_step's constant statistics: procedural data, 20% labels, small_resnet width "
                      f"{cs_base['model']['options']['width']}, {cs_base['run']['max_steps']} steps "
                      f"(median of seeds {seeds})\n")
        report += [*constant_statistics(args.quick, args.steps, seeds, workdir), ""]

    print("\n".join(report))
    titles = {"spiral": "UBN: spiral, BN vs UBN", "imagenette": "UBN: labeled fraction, Imagenette",
              "depth": "UBN: labeled fraction, procedural depth",
              "constant_statistics": "UBN: where two_step's deficit comes from"}
    ends = [*list(sections.values())[1:], len(report)]
    for (part, start), end in zip(sections.items(), ends, strict=True):  # `--parts spiral` keeps the others
        write_section(f"ubn_study/{part}", titles[part], "\n".join(report[start:end]), quick=args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
