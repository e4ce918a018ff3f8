"""UBN studies (METHODS.md section 1): the 5-seed spiral table and the labeled-fraction studies.

1. Spiral: BN vs UBN (two_step, joint) held-out accuracy over seeds 0-4
   (examples/ubn_spiral.yaml).
2. Labeled fraction on Imagenette (../shared/datasets/imagenette2-128, or
   $HASTEN_SHARED_DATA) at a CPU-sized resolution: val top-1 of BN (labeled
   frames only) vs UBN (two_step, the rest of the train split as the unlabeled
   stream) for each fraction. 100% leaves no unlabeled images: UBN = BN there.
3. The same on the embedded depth data (procedural_depth, dispnet): delta < 1.25
   and abs-rel.

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
from pathlib import Path
from typing import Any

import torch

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
    modes: list[str] = ("two_step",),  # type: ignore[assignment]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every part runs")
    parser.add_argument("--parts", nargs="+", default=["spiral", "imagenette", "depth"],
                        choices=["spiral", "imagenette", "depth"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0-4 (spiral), 0 (studies)")
    parser.add_argument("--steps", type=int, default=None, help="override max_steps of every run")
    parser.add_argument("--width", type=int, default=32, help="small_resnet width of the Imagenette study")
    parser.add_argument("--modes", nargs="+", default=["two_step"], choices=["two_step", "joint"],
                        help="UBN modes compared with BN in the labeled-fraction studies")
    parser.add_argument("--json", default=None, help="write the raw results here")
    parser.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    args = parser.parse_args(argv)
    from common import ensure_plugins  # plugins/ubn usable without installing it

    ensure_plugins(["ubn"])
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

    print("\n".join(report))
    from common import write_section  # benchmarks/common.py: the RESULTS.md writer

    titles = {"spiral": "UBN: spiral, BN vs UBN", "imagenette": "UBN: labeled fraction, Imagenette",
              "depth": "UBN: labeled fraction, procedural depth"}
    ends = [*list(sections.values())[1:], len(report)]
    for (part, start), end in zip(sections.items(), ends, strict=True):  # `--parts spiral` keeps the others
        write_section(f"ubn_study/{part}", titles[part], "\n".join(report[start:end]), quick=args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
