"""Supervised accuracy-vs-compute frontiers at a *converged* CPU scale (`hasten sweep`'s machinery).

    python benchmarks/frontier.py --plan                        (what would run, what is done; trains nothing)
    nice python benchmarks/frontier.py --seeds 3                (everything not done yet; hours on 2 cores)
    python benchmarks/frontier.py --report                      (tables from the stored records only)
    python benchmarks/frontier.py --quick                       (tiny sizes on the embedded data: checks the script)

The uniform (fully annealed cosine) baseline is trained at several budgets of
a length where it is near its plateau (doubling the budget adds under one
point of validation accuracy, training-set accuracy >= 0.9: both shown in
the table), and each technique at 1/2 and 2/3 of that length. A technique's
speed-up is the baseline FLOPs needed for its accuracy, interpolated on the
baseline's frontier, / its own FLOPs (hasten.frontier; docs/methods.md,
"Speed-up accounting").

Datasets: Imagenette (``$HASTEN_SHARED_DATA/imagenette2-128`` or
``../shared/datasets/imagenette2-128``) at 32 px (80 epochs), and Fashion-MNIST
(``$HASTEN_FASHION_MNIST`` or the system package's folder; Debian:
``apt-get install dataset-fashion-mnist``) at 28 px, a fixed 10,000-image
training subset (40 epochs). A dataset that is absent is skipped with the reason printed;
nothing is installed.

Every (recipe, budget, seed) result is a JSON record under
``benchmarks/results/frontier/<dataset>/records/`` (committed); a rerun skips
every run that has one, so the study spans sessions. Runs are ordered
seed-major: per seed both baselines' frontiers, then every technique.
The run folders and MLflow database beside the records are not committed.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from common import REPO, RESULTS_DIR, SMOKE_DIR, ensure_plugins, shared_datasets, write_section

from hasten.commands import sweep

PLUGINS = ("selection", "cooldown", "f1clr", "progressive")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
SHORT_BUDGETS = (0.5, 2 / 3)
EVALS_PER_LENGTH = 8

#: the converged scale, per dataset: the baseline's full length and the techniques' settings
SCALES: dict[str, dict[str, Any]] = {
    # 40 epochs left Imagenette short of its plateau (20 -> 40 epochs: +3 points, trainset/acc1 0.86 at 30):
    # 80 epochs; budgets 1/16 and 3/8 are the 5- and 30-epoch runs measured then (reused: same runs)
    "imagenette": {"resolution": 32, "channels": 3, "batch": 128, "epochs": 80, "train_samples": None,
                   "width": 16, "lr": 0.1, "selection_resolution": 14, "sp_min": 16, "sp_step": 4,
                   "budgets": (0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)},
    "fashion_mnist": {"resolution": 28, "channels": 1, "batch": 128, "epochs": 40, "train_samples": 10000,
                      "width": 16, "lr": 0.1, "selection_resolution": 12, "sp_min": 16, "sp_step": 4,
                      "budgets": (0.125, 0.25, 0.5, 0.75, 1.0)},
}
QUICK = {"resolution": 16, "batch": 32, "steps": 24, "width": 4, "train_samples": 512}


def locate(dataset: str) -> tuple[dict[str, Any] | None, str]:
    """The data section for ``dataset`` and its training-set size, or None and why it is absent."""
    if dataset == "imagenette":
        root = shared_datasets() / "imagenette2-128"
        if not (root / "train").is_dir():
            return None, f"Imagenette not found at {root} (set HASTEN_SHARED_DATA)"
        return {"dataset": "imagefolder", "path": _relative(root), "options": {"cache": True}}, "imagenette"
    candidates = [os.environ.get("HASTEN_FASHION_MNIST"), *FASHION_MNIST_DIRS]
    for folder in filter(None, candidates):
        if any(Path(folder).glob("train-images-idx3-ubyte*")):
            return {"dataset": "idx", "path": folder}, "fashion_mnist"
    return None, ("Fashion-MNIST not found (set HASTEN_FASHION_MNIST, or install the system package, "
                  "e.g. `apt-get install dataset-fashion-mnist` on Debian)")


def _relative(path: Path) -> str:
    """A path relative to the repository when it can be (record hashes then match across checkouts)."""
    try:
        return os.path.relpath(path.resolve(), REPO)
    except ValueError:
        return str(path)


def images_in(data: dict[str, Any], scale: dict[str, Any]) -> int:
    if scale.get("train_samples"):
        return int(scale["train_samples"])
    root = REPO / data["path"]
    return sum(1 for p in (root / "train").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def recipes(dataset: str, quick: bool, threads: int) -> tuple[dict[str, dict[str, Any]], int] | None:
    """label -> config dict (the baseline first) and the baseline's length in steps; None if data absent."""
    s = SCALES[dataset]
    if quick:
        data: dict[str, Any] = {"dataset": "procedural", "options": {"train_size": 1024, "val_size": 256}}
        res, batch, width, steps = QUICK["resolution"], QUICK["batch"], QUICK["width"], QUICK["steps"]
        sel_res, sp_min, sp_step = 8, 8, 4
    else:
        found, why = locate(dataset)
        if found is None:
            print(f"skipped {dataset}: {why}", flush=True)
            return None
        data = found
        res, batch, width = s["resolution"], s["batch"], s["width"]
        steps = round(s["epochs"] * images_in(data, s) / batch)
        sel_res, sp_min, sp_step = s["selection_resolution"], s["sp_min"], s["sp_step"]
        if s["train_samples"]:
            data["train_samples"] = s["train_samples"]
    data.update({"resolution": res, "batch_size": batch, "num_workers": 0})
    every = max(1, steps // EVALS_PER_LENGTH)
    base: dict[str, Any] = {
        "run": {"name": dataset, "max_steps": steps, "log_every": max(1, min(50, every)), "progress": False,
                "threads": threads},
        "data": data,
        "model": {"name": "small_resnet", "options": {"width": width}},
        "optim": {"name": "sgd", "lr": s["lr"], "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},  # fully annealed to 0 at each run's own length: the honest baseline
        "eval": {"every_steps": every, "batch_size": 512, "train_subset": 1024},
        "tracking": {"artifacts": False},
    }
    # Techniques' settings are in steps of the *shortened* runs where the research states them so
    # (selection's uniform warm-up 3%); the sweep shortens max_steps, so fractions are used where offered.
    selection = {"beta": 1.0, "candidate_ratio": 2.0, "selection_resolution": sel_res,
                 "warmup_steps": max(1, round(0.03 * steps * 0.5)), "strategy": "probabilistic"}
    cooldown = {"fraction": 0.1}
    f1clr = {"max_lr": s["lr"], "warmup_fraction": 0.1, "momentum_low": 0.85, "momentum_high": 0.95}
    progressive = {"mode": "super", "min_resolution": sp_min, "resolution_step": sp_step}

    def plus(**plugins: Any) -> dict[str, Any]:
        out = copy.deepcopy(base)
        out["plugins"] = plugins
        if "f1clr" in plugins:
            out.pop("schedule")  # F1-CLR owns the LR and momentum
        return out

    return {
        "uniform": base,
        "selection + cool-down": plus(selection=selection, cooldown=cooldown),
        "selection, no cool-down": plus(selection=selection),
        "greedy + cool-down": plus(selection={**selection, "strategy": "greedy"}, cooldown=cooldown),
        "super-progressive + F1-CLR": plus(progressive=progressive, f1clr=f1clr),
        "fast (selection + super-progressive + F1-CLR)": plus(selection=selection, progressive=progressive,
                                                              f1clr=f1clr),
        # hasten-selection's scoring variants beyond the research (plugins/selection/README.md)
        "selection (loss memory) + cool-down": plus(selection={**selection, "scoring": "memory"}, cooldown=cooldown),
        "selection (proxy) + cool-down": plus(selection={**selection, "scoring": "proxy", "proxy_width": 4},
                                              cooldown=cooldown),
    }, steps


def entries_for(dataset: str, out: Path, quick: bool, threads: int) -> list[sweep.SweepConfig] | None:
    found = recipes(dataset, quick, threads)
    if found is None:
        return None
    configs, _ = found
    folder = out / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = [f"tracking.uri=sqlite:///{(out / 'mlflow.db').resolve()}", "tracking.experiment=frontier",
                 f"run.output_dir={out / 'runs'}"]
    entries = []
    for label, config in configs.items():
        path = folder / (sweep._slug(label) + ".yaml")
        path.write_text("# written by benchmarks/frontier.py; budgets and seeds are set by the sweep\n"
                        + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        entries.extend(sweep.prepare([str(path)], overrides, [1.0], 1, [label]))
    return entries


Plan = list[tuple[sweep.SweepConfig, float, int]]


def baseline_plan(dataset: str, entries: list[sweep.SweepConfig], seed: int) -> Plan:
    """One seed of a dataset's baseline frontier."""
    return [(entries[0], b, seed) for b in SCALES[dataset]["budgets"]]


def techniques_plan(entries: list[sweep.SweepConfig], seed: int) -> Plan:
    """One seed of every technique at the short budgets."""
    return [(e, b, seed) for e in entries[1:] for b in SHORT_BUDGETS]


def plateau_text(records: list[sweep.SweepRecord], baseline: str, metric: str) -> str:
    """The baseline's plateau check: doubling from budget 1/2 to 1, and its training-set accuracy."""
    rows = {r.budget: r for r in sweep.frontier_rows(records) if r.label == baseline}
    if 1.0 not in rows or 0.5 not in rows:
        return "Plateau check: the baseline's budgets 0.5 and 1 are not both measured yet."
    full, half = rows[1.0], rows[0.5]
    gain = full.median_value - half.median_value
    train = f"{min(full.trainset_acc1):.3f}-{max(full.trainset_acc1):.3f}" if full.trainset_acc1 else "n/a"
    ok = gain < 0.01 and bool(full.trainset_acc1) and min(full.trainset_acc1) >= 0.9
    return (f"Plateau check ({len(full.values)} seeds at budget 1, {len(half.values)} at 1/2): doubling the "
            f"length from 1/2 to 1 adds {100 * gain:+.2f} points of {metric} (median); trainset/acc1 at budget 1: "
            f"{train}. " + ("Converged by the criterion (< 1 point, >= 0.9)." if ok
                            else "NOT converged by the criterion (< 1 point and trainset/acc1 >= 0.9)."))


def report(dataset: str, entries: list[sweep.SweepConfig], out: Path, quick: bool, seeds: int) -> None:
    # By label and length, not by hash: a record stays this study's when a later hasten version hashes
    # configs differently; a record of another length under the same label (an earlier scale) is left out.
    planned_steps = {(e.label, b): sweep.with_budget(e.config, b).run.max_steps
                     for e in entries for b in (SCALES[dataset]["budgets"] if e is entries[0] else SHORT_BUDGETS)}
    if quick:
        planned_steps = {(e.label, b): sweep.with_budget(e.config, b).run.max_steps
                         for e in entries for b in (*SCALES[dataset]["budgets"], *SHORT_BUDGETS)}
    records = [r for r in sweep.read_records(out) if planned_steps.get((r.label, r.budget)) == r.steps]
    if not records:
        print(f"{dataset}: no records yet")
        return
    metric = entries[0].config.eval.metric
    order = {e.label: i for i, e in enumerate(entries)}
    records.sort(key=lambda r: (order[r.label], r.budget, r.seed))
    rows = sweep.frontier_rows(records)
    table = sweep.markdown(rows, records, metric, entries[0].label)
    plot = sweep.write_plot(rows, metric, out / "frontier.png", f"{dataset}: {metric} vs training FLOPs")
    planned = len(SCALES[dataset]["budgets"]) + len(SHORT_BUDGETS) * (len(entries) - 1)
    done_seeds = sorted({r.seed for r in records})
    commits = sorted({r.code_commit for r in records if r.code_commit})
    s = SCALES[dataset]
    sizes = (f"small_resnet width {s['width']}, {s['resolution']} px, batch {s['batch']}, baseline length "
             f"{entries[0].config.run.max_steps} steps ({s['epochs']} epochs"
             + (f" of a fixed {s['train_samples']}-image training subset" if s["train_samples"] else "")
             + f"), SGD lr {s['lr']} nesterov, cosine to 0; baseline budgets "
             f"{', '.join(f'{b:g}' for b in s['budgets'])}; techniques at "
             f"{', '.join(f'{b:.3g}' for b in SHORT_BUDGETS)}; selection at {s['selection_resolution']} px, "
             f"beta 1, 2x candidates, cool-down 10%; super-progressive {s['sp_min']}->{s['resolution']} px in steps of "
             f"{s['sp_step']}; F1-CLR peak = the baseline's lr, warm-up 10%")
    body = "\n".join([
        f"Scale: {'quick (smoke)' if quick else 'converged'}: {sizes}.",
        "",
        f"Held: {len(records)} of {planned * seeds} planned runs ({planned} per seed x {seeds} seeds); seeds with "
        f"results: {', '.join(map(str, done_seeds))}. Each row says how many seeds it holds.",
        f"Records: `{_relative(out / 'records')}`; code commits of the runs: {', '.join(commits) or 'unknown'}.",
        "",
        plateau_text(records, entries[0].label, metric),
        "",
        table,
    ])
    write_section(f"frontier/{dataset}", f"Supervised frontier at the converged scale: {dataset}", body,
                  quick=quick, plot=plot)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("imagenette", "fashion_mnist", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="run.threads of every run (1 for background runs)")
    parser.add_argument("--plan", action="store_true", help="list the planned runs and which are done; train nothing")
    parser.add_argument("--report", action="store_true", help="write the tables from the stored records; train nothing")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the embedded data (smoke check)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds: at least 1")
    ensure_plugins(PLUGINS)
    datasets = ("imagenette", "fashion_mnist") if args.dataset == "all" else (args.dataset,)
    root = (SMOKE_DIR / "frontier") if args.quick else (RESULTS_DIR / "frontier")
    studies = {}
    for dataset in datasets:
        out = root / dataset
        entries = entries_for(dataset, out, args.quick, args.threads)
        if entries is not None:
            studies[dataset] = (entries, out)
    if not args.report:
        # per seed: both baselines' frontiers (and plateau checks) first, then the techniques
        steps = [(seed, dataset, part) for seed in range(args.seeds) for part in ("baseline", "techniques")
                 for dataset in studies]
        for seed, dataset, part in steps:
            entries, out = studies[dataset]
            items = baseline_plan(dataset, entries, seed) if part == "baseline" else techniques_plan(entries, seed)
            if args.plan:
                for entry, budget, s in items:
                    done = sweep.record_path(out, entry.label, entry.config_hash, budget, s).is_file()
                    print(f"{dataset:14s} seed {s} {entry.label:48s} budget {budget:.3g}: "
                          f"{'done' if done else 'to do'}")
                continue
            sweep.run_plan(items, out)
            report(dataset, entries, out, args.quick, args.seeds)
    if not args.plan:
        for dataset, (entries, out) in studies.items():
            report(dataset, entries, out, args.quick, args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
