"""UBN where few labels meet long training (issue 17, items 2-4), on `hasten sweep`'s resumable machinery.

    python benchmarks/ubn_long.py --plan              (planned runs, done or not, estimated CPU hours; trains nothing)
    nice python benchmarks/ubn_long.py                (everything not done yet; many hours on 2 cores, resumable)
    python benchmarks/ubn_long.py --report            (RESULTS.md sections from the stored records only)
    python benchmarks/ubn_long.py --quick             (tiny sizes on the embedded data: checks the script)
    nice python benchmarks/ubn_long.py --rediagnose   (retrain the runs whose diagnostics are missing: their
                                                       checkpoint went with an earlier machine)

The labeled-fraction study in the regime where UBN's gains are reported: a
small labeled set trained on for long, so the network fits its few labeled
images and their feature statistics drift from the unlabeled ones. Each
(dataset, labeled fraction) has its length in steps (SCALES): hundreds of
epochs of the labeled images, and long enough that BN's val metric has
stopped rising (the plateau check below; the tables state steps and epochs
per fraction). Imagenette's 10% and 25% run longer than its 5% because at
5%'s 2000 steps their BN baseline still gained 1.1-1.8 points from doubling.

* Imagenette (``$HASTEN_SHARED_DATA/imagenette2-128`` or
  ``../shared/datasets/imagenette2-128``; skipped with the reason when absent)
  at 32 px, small_resnet width 16, val/acc1.
* procedural_depth (embedded), dispnet, val/delta1 (delta < 1.25).

Labeled fractions 0.05, 0.1, 0.25 (``data.labeled_fraction``, stratified,
drawn per seed; the rest of the train split is the unlabeled stream). Recipes:
BN (no plugin) and UBN two_step, two_step_grad, joint (plugins/ubn). Optimisers:
SGD 0.1 nesterov (as benchmarks/frontier.py) and the research's Adam 2e-4,
both cosine-annealed to 0 at each run's own length. The BN baseline also runs
at half and at twice the length: the plateau check is that doubling the
length (1 -> 2) adds < 1 point, so the compared length sits on the plateau;
1/2 -> 1 shows the approach to it.

Every (recipe, budget, seed) result is a JSON record under
``benchmarks/results/ubn_long/<dataset>/records/`` (committed); a rerun skips
every run that has one, so the study spans sessions. Each full-length run keeps
its final checkpoint (in ``runs/``, not committed); from it the per-layer
labeled/unlabeled distances (Table 2.1, ``hasten ubn-report``) and, for
classification, MC-BN uncertainty (``ubn-report --mc-bn``) are computed once and
stored beside the records in ``diagnostics/`` (committed, small).

Order: seed 0 of everything at 5% labels first (the issue's target: a UBN mode
>= 2 points over BN at 5% labels on Imagenette), then seed 0 at 10% and 25%,
then the other seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_queue
import yaml
from common import RESULTS_DIR, SMOKE_DIR, ensure_plugins, run_study, write_section
from frontier import _relative, locate

from hasten.commands import sweep
from hasten.errors import TrainingInterrupted, TrainingStopped, UserError

FRACTIONS = (0.05, 0.1, 0.25)
MODES = ("two_step", "two_step_grad", "joint")
BN = "BN"
PLATEAU_BUDGETS = (0.5, 1.0, 2.0)  # the BN baseline's; every UBN recipe runs at 1
#: budgets > 1 of seeds > 0 run after everything else (seed 0's shows the plateau first; the tables fill first)
LATE_BUDGET = 2.0
MC_PASSES = 16  # stochastic-BN passes of the MC-BN figures
DIAGNOSTIC_IMAGES = 2000  # samples per side of Table 2.1, validation images of MC-BN
EVALS_PER_LENGTH = 8
#: the CPU-time estimate: training throughput of small_resnet width 16 at 32 px on the 2-core machine, unloaded
#: (images/s), turned into a multiply-add rate and applied to every run's FLOPs from `hasten estimate`
ESTIMATE_IMAGES_PER_S = 500

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "adam": {"name": "adamw", "lr": 2e-4, "weight_decay": 0.0},  # the research's Adam 2e-4 (no decay)
}
OPTIMIZER_TEXT = {"sgd": "SGD 0.1 nesterov, wd 5e-4", "adam": "Adam 2e-4"}

#: per dataset: length in steps per labeled fraction, sizes, optimisers
SCALES: dict[str, dict[str, Any]] = {
    # 9469 training images: 5% = 473 labeled -> 2000 x 64 / 473 = 270 epochs of them; 10%: 4000 steps = 270
    # epochs; 25%: 8000 steps = 216 epochs. 10%/25% were 2000 steps at first (135/54 epochs): not on BN's plateau
    # (doubling added +1.1 to +1.8 points, seed 0), so they were lengthened; doubling 2000 keeps the 10% seed-0 BN
    # runs at 2000 and 4000 steps as this length's 1/2 and 1 (the sweep reuses a run of the same recipe)
    "imagenette": {"steps": {0.05: 2000, 0.1: 4000, 0.25: 8000}, "batch": 64, "resolution": 32, "width": 16,
                   "metric": "val/acc1", "optimizers": ("sgd", "adam")},
    # 4000 training frames: 5% = 200 labeled -> 1500 x 32 / 200 = 240 epochs of them (10%: 120, 25%: 48)
    "depth": {"steps": {0.05: 1500, 0.1: 1500, 0.25: 1500}, "batch": 32, "resolution": 32,
              "widths": [16, 32, 64, 128], "train_size": 4000, "val_size": 500, "metric": "val/delta1",
              "optimizers": ("sgd", "adam")},
}
QUICK: dict[str, dict[str, Any]] = {
    "imagenette": {"steps": 24, "batch": 16, "resolution": 16, "width": 4, "train_size": 512, "val_size": 128},
    "depth": {"steps": 24, "batch": 8, "resolution": 32, "widths": [8, 16, 32, 64], "train_size": 256,
              "val_size": 64},
}
QUICK_FRACTIONS = (0.25,)


def label(optimizer: str, fraction: float, mode: str | None) -> str:
    return f"{optimizer} {fraction:.0%} " + (BN if mode is None else f"UBN {mode}")


def length(dataset: str, fraction: float, quick: bool) -> int:
    """Steps of a full-length (budget 1) run of ``dataset`` at ``fraction`` labels."""
    return int(QUICK[dataset]["steps"]) if quick else int(SCALES[dataset]["steps"][fraction])


def set_length(config: dict[str, Any], steps: int) -> None:
    """``config`` (a base_config) made ``steps`` long, with its evaluations, logs and checkpoints spread over it."""
    every = max(1, steps // EVALS_PER_LENGTH)
    config["run"].update({"max_steps": steps, "log_every": max(1, min(50, every)),
                          "checkpoint_every": max(1, steps // 12)})
    config["eval"]["every_steps"] = every


def base_config(dataset: str, quick: bool, threads: int) -> dict[str, Any] | None:
    """The BN config of ``dataset`` (no fraction, optimiser or length yet); None when its data is absent."""
    s = SCALES[dataset]
    q = QUICK[dataset] if quick else {}
    batch, res = q.get("batch", s["batch"]), q.get("resolution", s["resolution"])
    if dataset == "imagenette":
        if quick:  # the embedded stand-in of the same shape of task
            data: dict[str, Any] = {"dataset": "procedural",
                                    "options": {"train_size": q["train_size"], "val_size": q["val_size"]}}
        else:
            found, why = locate("imagenette")
            if found is None:
                print(f"skipped imagenette: {why}", flush=True)
                return None
            data = found
        model: dict[str, Any] = {"name": "small_resnet", "options": {"width": q.get("width", s.get("width"))}}
        task: dict[str, Any] = {}
        evaluation: dict[str, Any] = {"batch_size": 512, "train_subset": 1024}
    else:
        data = {"dataset": "procedural_depth", "options": {"train_size": q.get("train_size", s["train_size"]),
                                                           "val_size": q.get("val_size", s["val_size"])}}
        model = {"name": "dispnet", "options": {"widths": q.get("widths", s["widths"])}}
        task = {"task": {"name": "depth"}}
        evaluation = {"batch_size": 128, "metric": "val/delta1"}
    data.update({"resolution": res, "batch_size": batch, "num_workers": 0})
    return {
        # every finished run writes its final checkpoint (run.final_checkpoint): the diagnostics read it;
        # checkpoint_every (set_length): a run stopped at a session's end continues, losing at most 1/12 of it;
        # channels_last: faster steps on the CPU for both models (benchmarks/memory_format.py), the same math.
        # Neither is part of the recipe's hash.
        "run": {"name": f"ubn-long-{dataset}", "progress": False, "threads": threads, "channels_last": True},
        "data": data,
        "model": model,
        **task,
        "schedule": {"name": "cosine"},
        "eval": evaluation,
        "tracking": {"artifacts": False},
    }


def entries_for(dataset: str, out: Path, quick: bool, threads: int) -> dict[tuple[str, float, str | None],
                                                                            sweep.SweepConfig] | None:
    """(optimiser, fraction, mode or None for BN) -> the sweep entry; None when the data is absent."""
    base = base_config(dataset, quick, threads)
    if base is None:
        return None
    folder = out / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = [f"tracking.uri=sqlite:///{(out / 'mlflow.db').resolve()}", "tracking.experiment=ubn_long",
                 f"run.output_dir={out / 'runs'}"]
    entries = {}
    for optimizer in SCALES[dataset]["optimizers"]:
        for fraction in (QUICK_FRACTIONS if quick else FRACTIONS):
            for mode in (None, *MODES):
                config = copy.deepcopy(base)
                set_length(config, length(dataset, fraction, quick))
                config["optim"] = dict(OPTIMIZERS[optimizer])
                config["data"]["labeled_fraction"] = fraction
                if mode is not None:
                    config["plugins"] = {"ubn": {"mode": mode}}
                name = label(optimizer, fraction, mode)
                path = folder / (sweep._slug(name) + ".yaml")
                path.write_text("# written by benchmarks/ubn_long.py; budgets and seeds are set by the sweep\n"
                                + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
                entries[(optimizer, fraction, mode)] = sweep.prepare([str(path)], overrides, [1.0], 1, [name])[0]
    return entries


Item = study_queue.Item


def plan_items(studies: dict[str, tuple[dict[Any, sweep.SweepConfig], Path]], seeds: int,
               quick: bool) -> list[tuple[str, Item]]:
    """(dataset, (entry, budget, seed)) in the order trained: seed 0 at the smallest fraction first."""
    fractions = QUICK_FRACTIONS if quick else FRACTIONS
    groups = [(0, fractions[:1]), (0, fractions[1:])] + [(seed, fractions) for seed in range(1, seeds)]
    items, late = [], []
    for seed, chosen in groups:
        for fraction in chosen:
            for dataset, (entries, _) in studies.items():
                for (_, f, mode), entry in entries.items():
                    if f != fraction:
                        continue
                    for budget in (PLATEAU_BUDGETS if mode is None else (1.0,)):
                        (late if seed > 0 and budget >= LATE_BUDGET else items).append((dataset, (entry, budget, seed)))
    return items + late


# ------------------------------------------------------------------ cost estimate
def estimated_seconds(entry: sweep.SweepConfig, budget: float, out: Path, rate: float) -> float:
    """CPU seconds of one run: `hasten estimate`'s FLOPs at the assumed throughput (cached in out/estimates.json)."""
    from hasten.commands.estimate import estimate

    cache_file = out / "estimates.json"
    cache = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file.is_file() else {}
    key = entry.config_hash
    if key not in cache:
        config = entry.config.model_copy(deep=True)
        found = estimate(config)
        per_image = found["baseline"]["train_flops"] / max(1, found["baseline"]["steps"] * config.data.batch_size)
        cache[key] = {"label": entry.label, "total_flops": found["config"]["total_flops"],
                      "baseline_flops_per_image": per_image}
        sweep.write_json(cache_file, cache)
    return budget * cache[key]["total_flops"] / rate


def macs_per_second() -> float:
    """The assumed rate: ESTIMATE_IMAGES_PER_S training images/s of small_resnet width 16 at 32 px (3x forward)."""
    import torch

    from hasten.accounting import count_forward_flops
    from hasten.models import build_model

    model = build_model("small_resnet", num_classes=10, in_channels=3, options={"width": 16})
    return ESTIMATE_IMAGES_PER_S * 3 * count_forward_flops(model, torch.zeros(1, 3, 32, 32))


# ------------------------------------------------------------------ diagnostics
def diagnostics_path(out: Path, entry: sweep.SweepConfig, seed: int) -> Path:
    return out / "diagnostics" / f"{sweep._slug(entry.label)}-{entry.config_hash}" / f"b1-s{seed}.json"


def diagnose(entry: sweep.SweepConfig, seed: int, out: Path, dataset: str, trained_in: Path | None = None,
             retrained: dict[str, Any] | None = None) -> str:
    """Table 2.1 distances (and MC-BN for classification) of a finished full-length run, stored once.

    ``trained_in``: the folder whose runs/ holds the checkpoint (default ``out``; RETRAINED_DIR for a run
    retrained because its checkpoint was gone), ``retrained``: what the blob says of such a retraining."""
    from hasten_ubn.report import load_trained, mc_bn_report, report

    target = diagnostics_path(out, entry, seed)
    if target.is_file():
        return "diagnostics done"
    folder = sweep.run_dir_path(trained_in or out, entry.label, entry.config_hash, 1.0, seed) / "checkpoints"
    checkpoints = sorted(folder.iterdir()) if folder.is_dir() else []
    if not checkpoints:
        return f"diagnostics: no checkpoint in {_relative(folder)} (the run was trained elsewhere); skipped"
    config = entry.config.model_copy(deep=True)
    config.run.seed = seed  # the seed draws the labeled subset: the split the run trained on
    checkpoint = str(checkpoints[-1])
    try:
        loaded = load_trained(config, checkpoint)
        distances = report(config, checkpoint, max_images=DIAGNOSTIC_IMAGES, loaded=loaded)
        mc = (mc_bn_report(config, checkpoint, MC_PASSES, max_images=DIAGNOSTIC_IMAGES, seed=seed, loaded=loaded)
              if dataset == "imagenette" else None)
    except (UserError, ValueError, RuntimeError, OSError) as error:  # the study goes on; retried on a rerun
        return f"diagnostics FAILED ({error}); tried again on the next run of the script"
    blob = {"label": entry.label, "config_hash": entry.config_hash, "seed": seed, "budget": 1.0,
            "checkpoint": _relative(Path(checkpoint)), "max_images": DIAGNOSTIC_IMAGES,
            "distances": [asdict(r) for r in distances], "mc_bn": None if mc is None else asdict(mc)}
    if retrained is not None:
        blob["retrained"] = retrained
    sweep.write_json(target, blob)
    return "diagnostics written" + ("" if mc is None else f" (MC-BN AUROC {mc.auroc_wrong:.3f})")


#: where --rediagnose retrains (below each dataset's folder; not committed: its runs hold checkpoints)
RETRAINED_DIR = "retrained"


def rediagnose(dataset: str, items: list[Item], out: Path) -> None:
    """Diagnostics for the full-length runs that have a record but none (their checkpoint went with an earlier
    session's machine): retrain each, same recipe and seed, in ``out/retrained``, check its metric against the
    stored record (the same machine trains bit-identically; another may differ by ~0.5 point) and diagnose
    that network. The blob names the stored and the retrained value, so a table can say which these are."""
    scratch = out / RETRAINED_DIR
    for entry, budget, seed in items:
        stored_path = sweep.record_path(out, entry.label, entry.config_hash, budget, seed)
        if budget != 1.0 or not stored_path.is_file() or diagnostics_path(out, entry, seed).is_file():
            continue
        stored = sweep.read_record(stored_path)
        if stored is None:
            continue
        config = entry.config.model_copy(deep=True)
        # its own MLflow store: in the study's, run_plan would find the stored run finished and train nothing
        config.tracking.uri = f"sqlite:///{(scratch / 'mlflow.db').resolve()}"
        again_entry = replace(entry, config=config)
        try:  # claimed while it trains, skipped when another driver has it; a finished retraining is reused
            found = sweep.run_plan([(again_entry, budget, seed)], scratch,
                                   log=lambda text: print(f"{dataset}: retrain", text, flush=True))
        except TrainingInterrupted:
            raise
        except (UserError, TrainingStopped) as error:
            print(f"{dataset}: retrain {entry.label}, seed {seed}: FAILED ({error}); tried again next time", flush=True)
            continue
        if not found:
            continue  # another driver is retraining it
        again = found[0]
        retrained = {"stored_value": stored.value, "stored_commit": stored.code_commit, "value": again.value,
                     "commit": again.code_commit, "difference_points": 100 * (again.value - stored.value)}
        print(f"    {entry.label}, seed {seed}: retrained {again.metric} {again.value:.4f} against the stored "
              f"{stored.value:.4f} ({retrained['difference_points']:+.2f} points); "
              + diagnose(entry, seed, out, dataset, trained_in=scratch, retrained=retrained), flush=True)


def read_diagnostics(out: Path, entry: sweep.SweepConfig) -> list[dict[str, Any]]:
    folder = diagnostics_path(out, entry, 0).parent
    found = []
    for path in sorted(folder.glob("b1-s*.json")) if folder.is_dir() else []:
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return found


# ------------------------------------------------------------------ report
def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _spread(values: list[float], fmt: str = ".4f", scale: float = 1.0) -> str:
    """median [min-max] (n) of finite values; '-' when none."""
    finite = [scale * v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "-"
    mid = format(statistics.median(finite), fmt)
    if len(finite) == 1:
        return f"{mid} (1)"
    return f"{mid} [{format(min(finite), fmt)}, {format(max(finite), fmt)}] ({len(finite)})"


def labeled_count(dataset: str, entry: sweep.SweepConfig, fraction: float) -> int:
    """About how many labeled images (stratified rounding per class aside)."""
    data = entry.config.data
    if dataset == "imagenette" and data.dataset == "imagefolder":
        from frontier import images_in

        total = images_in({"path": data.path}, {})
    else:
        total = int(data.options.get("train_size", 0))
    return max(1, round(fraction * total))


def report(dataset: str, entries: dict[tuple[str, float, str | None], sweep.SweepConfig], out: Path, quick: bool,
           seeds: int) -> None:
    """The RESULTS.md section of ``dataset`` from its stored records and diagnostics."""
    planned = {(e.label, b): sweep.with_budget(e.config, b).run.max_steps
               for (_, _, mode), e in entries.items() for b in (PLATEAU_BUDGETS if mode is None else (1.0,))}
    records = [r for r in sweep.read_records(out) if planned.get((r.label, r.budget)) == r.steps]
    if not records:
        print(f"{dataset}: no records yet")
        return
    by_key = {(r.label, r.budget, r.seed): r for r in records}

    def values(entry: sweep.SweepConfig, budget: float = 1.0) -> dict[int, float]:
        return {seed: r.value for (name, b, seed), r in by_key.items() if name == entry.label and b == budget}

    s = SCALES[dataset]
    metric = s["metric"]
    optimizers = [o for o in s["optimizers"] if any(k[0] == o for k in entries)]
    fractions = sorted({k[1] for k in entries})
    steps = {k[1]: e.config.run.max_steps or 0 for k, e in entries.items()}  # per fraction
    batch = next(iter(entries.values())).config.data.batch_size
    lines: list[str] = []
    gains_for_plot: dict[str, dict[str, list[tuple[float, list[float]]]]] = {}
    target_lines = []
    for optimizer in optimizers:
        lines += [f"**{OPTIMIZER_TEXT[optimizer]}**: final {metric}: median [min, max] (number of seeds); "
                  "gain = UBN - BN in points, paired per seed (each seed draws its own labeled subset).", "",
                  "| labeled | labeled images (about) | steps | epochs of them | BN | "
                  + " | ".join(f"UBN {m} | gain {m}" for m in MODES) + " |",
                  "|---|---|---|---|---|" + "---|---|" * len(MODES)]
        for fraction in fractions:
            bn_entry = entries[(optimizer, fraction, None)]
            bn = values(bn_entry)
            count = labeled_count(dataset, bn_entry, fraction)
            cells = [f"{fraction:.0%}", str(count), str(steps[fraction]), f"{steps[fraction] * batch / count:.0f}",
                     _spread(list(bn.values()))]
            for mode in MODES:
                mine = values(entries[(optimizer, fraction, mode)])
                paired = [mine[k] - bn[k] for k in mine if k in bn]
                cells += [_spread(list(mine.values())), _spread(paired, "+.2f", 100.0)]
                gains_for_plot.setdefault(optimizer, {}).setdefault(mode, []).append((fraction, paired))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if dataset == "imagenette":
            smallest = fractions[0]
            bn = values(entries[(optimizer, smallest, None)])
            best = []
            for mode in MODES:
                mine = values(entries[(optimizer, smallest, mode)])
                paired = [mine[k] - bn[k] for k in mine if k in bn]
                if paired:
                    best.append((statistics.median(paired), mode, len(paired)))
            if best:
                gain, mode, count = max(best)
                target_lines.append(
                    f"- {OPTIMIZER_TEXT[optimizer]}, {smallest:.0%} labels: best UBN mode {mode}, median gain "
                    f"{_points(gain)} points over {count} seed(s): target (>= +2 points) "
                    + ("met." if gain >= 0.02 else "NOT met."))
    # the plateau: BN at half, full and twice the length; the verdict is on 1 -> 2 (is the length on it?)
    plateau = ["BN plateau check (length 1 = the steps of each fraction, 1/2 and 2 = half and twice them): the "
               "length is on the plateau when doubling it (1 -> 2) adds < 1 point; 1/2 -> 1 shows the approach.", "",
               "| optimiser | labeled | steps at 1 | BN at 1/2 | BN at 1 | BN at 2 | 1/2 -> 1 adds (points, paired) "
               "| 1 -> 2 adds (points, paired) | trainset/acc1 at 1 | on the plateau? |",
               "|---|---|---|---|---|---|---|---|---|---|"]
    for optimizer in optimizers:
        for fraction in fractions:
            entry = entries[(optimizer, fraction, None)]
            half, full, double = values(entry, 0.5), values(entry), values(entry, 2.0)
            rising = [full[k] - half[k] for k in full if k in half]
            beyond = [double[k] - full[k] for k in double if k in full]
            train = [by_key[(entry.label, 1.0, k)].trainset_acc1 for k in full]
            verdict = ("-" if not beyond else "yes" if statistics.median(beyond) < 0.01
                       else "NO (still rising at 2x)")
            plateau.append(f"| {OPTIMIZER_TEXT[optimizer]} | {fraction:.0%} | {steps[fraction]} | "
                           f"{_spread(list(half.values()))} | "
                           f"{_spread(list(full.values()))} | {_spread(list(double.values()))} | "
                           f"{_spread(rising, '+.2f', 100.0)} | {_spread(beyond, '+.2f', 100.0)} | "
                           f"{_spread([t for t in train if t is not None], '.3f')} | {verdict} |")
    diagnostics = diagnostics_text(dataset, entries, out, optimizers, fractions)
    runs_planned = len(plan_items({dataset: (entries, out)}, seeds, quick))
    commits = sorted({r.code_commit for r in records if r.code_commit})
    first = next(iter(entries.values())).config
    sizes = (f"small_resnet width {first.model.options.get('width')}" if dataset == "imagenette"
             else f"dispnet widths {first.model.options.get('widths')}")
    plot = write_gain_plot(gains_for_plot, out / "gain.png", f"{dataset}: UBN gain over BN vs labeled fraction")
    body = "\n".join([
        f"Scale: {'quick (smoke)' if quick else 'long training'}: {sizes}, "
        f"{first.data.resolution} px, batch {batch} labeled + {batch} unlabeled (UBN), "
        + ", ".join(f"{n} steps at {f:.0%}" for f, n in sorted(steps.items()))
        + f" labels, cosine to 0; optimisers: {', '.join(OPTIMIZER_TEXT[o] for o in optimizers)}; "
        f"UBN modes {', '.join(MODES)}; the rest of the train split is the unlabeled stream.",
        "",
        f"Held: {len(records)} of {runs_planned} planned runs ({seeds} seed{'s' if seeds > 1 else ''}); every cell "
        f"says how many seeds it holds. Records: `{_relative(out / 'records')}`, diagnostics: "
        f"`{_relative(out / 'diagnostics')}`; code commits of the runs: {', '.join(commits) or 'unknown'}.",
        "",
        *(["Target (issue 17): one UBN mode beats BN by >= 2 points at 5% labels on Imagenette:", *target_lines, ""]
          if target_lines else []),
        *lines,
        *plateau,
        "",
        diagnostics,
    ])
    write_section(f"ubn_long/{dataset}", f"UBN with few labels and long training: {dataset}", body, quick=quick,
                  plot=plot)


def diagnostics_text(dataset: str, entries: dict[tuple[str, float, str | None], sweep.SweepConfig], out: Path,
                     optimizers: list[str], fractions: list[float]) -> str:
    """Table 2.1 summaries per recipe (and MC-BN for classification), medians over seeds."""
    lines = ["Labeled vs unlabeled features of the trained networks (Table 2.1, `hasten ubn-report`, "
             f"{DIAGNOSTIC_IMAGES} samples per side, each BN layer's inputs in eval mode): means over the BN layers, "
             "median over seeds; W(U,U) = two halves of the unlabeled samples (the level of two draws of one "
             "distribution).", "",
             "| optimiser | labeled | recipe | seeds | W(L,U) | W(U,U) | KL(L\\|\\|U) | KS-rejected share | "
             "deepest layer W(L,U) |", "|---|---|---|---|---|---|---|---|---|"]
    mc_lines = [f"MC-BN uncertainty ({MC_PASSES} stochastic-BN passes, batches drawn as each recipe trains: "
                "[labeled; unlabeled] for UBN, labeled for BN; a seeded random "
                f"{DIAGNOSTIC_IMAGES} of the validation images): spread = std over passes of the predicted class's "
                "probability; AUROC of the spread for wrong predictions (0.5 = uninformative). Median [min, max] "
                "(seeds).", "",
                "| optimiser | labeled | recipe | MC accuracy | spread, right | spread, wrong | AUROC wrong |",
                "|---|---|---|---|---|---|---|"]
    any_mc = False
    retrained: list[dict[str, Any]] = []
    for optimizer in optimizers:
        for fraction in fractions:
            for mode in (None, *MODES):
                entry = entries[(optimizer, fraction, mode)]
                found = read_diagnostics(out, entry)
                if not found:
                    continue
                name = BN if mode is None else f"UBN {mode}"

                def mean_over_layers(blob: dict[str, Any], key: str) -> float:
                    return float(statistics.fmean(row[key] for row in blob["distances"]))

                cells = [_spread([mean_over_layers(b, k) for b in found], ".4f").rsplit(" (", 1)[0]
                         for k in ("wasserstein", "wasserstein_uu", "kl", "ks_fraction")]
                deepest = _spread([b["distances"][-1]["wasserstein"] for b in found], ".4f").rsplit(" (", 1)[0]
                again = [b["retrained"] for b in found if b.get("retrained")]
                retrained.extend(again)
                seeds_cell = f"{len(found)}" + (f" ({len(again)} retrained)" if again else "")
                lines.append(f"| {OPTIMIZER_TEXT[optimizer]} | {fraction:.0%} | {name} | {seeds_cell} | "
                             + " | ".join(cells) + f" | {deepest} |")
                mc = [b["mc_bn"] for b in found if b.get("mc_bn")]
                if mc:
                    any_mc = True
                    mc_lines.append(
                        f"| {OPTIMIZER_TEXT[optimizer]} | {fraction:.0%} | {name} | "
                        + " | ".join(_spread([m[k] for m in mc], ".4f" if k != "auroc_wrong" else ".3f")
                                     for k in ("accuracy", "std_correct", "std_wrong", "auroc_wrong")) + " |")
    if len(lines) == 4:
        lines.append("| (no diagnostics yet) | | | | | | | | |")
    if retrained:
        worst = max(abs(r["difference_points"]) for r in retrained)
        same = sum(r["difference_points"] == 0 for r in retrained)
        lines += ["", f"Retrained: {len(retrained)} of these networks were trained again for their diagnostics "
                  "(`--rediagnose`: the first training's checkpoint went with an earlier session's machine), same "
                  f"recipe and seed; {same} reproduce the stored metric exactly, the largest difference is "
                  f"{worst:.2f} points."]
    return "\n".join(lines + (["", *mc_lines] if any_mc else []))


def write_gain_plot(gains: dict[str, dict[str, list[tuple[float, list[float]]]]], path: Path, title: str) -> Path:
    """Gain (points) vs labeled fraction: a panel per optimiser, a line per mode through the medians, min-max bars."""
    from hasten.builtins.plots import _figure, _save

    figure, axes = _figure(1, max(1, len(gains)), size=(5.0 * max(1, len(gains)), 4.0))
    for axis, (optimizer, modes) in zip(axes[0], gains.items(), strict=False):
        for mode, points in modes.items():
            kept = [(f, [100 * v for v in vs]) for f, vs in points if vs]
            if not kept:
                continue
            xs = [f * 100 for f, _ in kept]
            mids = [statistics.median(vs) for _, vs in kept]
            low = [m - min(vs) for m, (_, vs) in zip(mids, kept, strict=True)]
            high = [max(vs) - m for m, (_, vs) in zip(mids, kept, strict=True)]
            axis.errorbar(xs, mids, yerr=[low, high], marker="o", capsize=3, label=f"UBN {mode}")
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.axhline(2.0, color="grey", linewidth=0.8, linestyle="--")
        axis.set_xscale("log")
        axis.set_xlabel("labeled fraction (%)")
        axis.set_ylabel("gain over BN (points, median and min-max over seeds)")
        axis.set_title(f"{title}\n{OPTIMIZER_TEXT[optimizer]}", fontsize="small")
        axis.grid(alpha=0.3, which="both")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    return _save(figure, path)


# ------------------------------------------------------------------ main
def train_and_diagnose(dataset: str, item: Item, studies: dict[str, tuple[dict[Any, sweep.SweepConfig], Path]],
                       quick: bool, seeds: int, prefix: str = "") -> None:
    """Train one planned run; a full-length one then gets its diagnostics (now: its checkpoint may not outlive
    the session) and the section is rewritten, so it stays current as runs finish."""
    entries, out = studies[dataset]
    entry, budget, seed = item
    prefix = prefix or f"{dataset}:"
    try:
        sweep.run_plan([item], out, log=lambda text: print(prefix, text, flush=True))
    except TrainingInterrupted:
        raise  # SIGINT/SIGTERM (a session's end) stops the study, not only this run
    except (UserError, TrainingStopped) as error:  # e.g. a diverged run: the study goes on without it
        print(f"{prefix} {entry.label}, budget {budget:g}, seed {seed}: FAILED ({error}); no record, "
              "so it is tried again on the next run of the script", flush=True)
        return
    if budget == 1.0:
        print(f"    {entry.label}, seed {seed}: {diagnose(entry, seed, out, dataset)}", flush=True)
        report(dataset, entries, out, quick, seeds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("imagenette", "depth", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; --quick: 1)")
    parser.add_argument("--threads", type=int, default=1, help="run.threads of every run (1 for background runs)")
    parser.add_argument("--plan", action="store_true", help="list the planned runs, which are done, estimated hours")
    parser.add_argument("--report", action="store_true", help="write the sections from the stored records only")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the embedded data (smoke check)")
    parser.add_argument("--rediagnose", action="store_true",
                        help="retrain the full-length runs whose diagnostics are missing because their checkpoint "
                        "is gone (in <dataset>/retrained/), compare with the stored record, write the diagnostics")
    study_queue.add_arguments(parser)
    args = parser.parse_args()
    until = study_queue.checked_arguments(parser, args)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if seeds < 1:
        parser.error("--seeds: at least 1")
    ensure_plugins(["ubn"])
    root = (SMOKE_DIR / "ubn_long") if args.quick else (RESULTS_DIR / "ubn_long")
    studies = {}
    for dataset in (("imagenette", "depth") if args.dataset == "all" else (args.dataset,)):
        out = root / dataset
        entries = entries_for(dataset, out, args.quick, args.threads)
        if entries is not None:
            studies[dataset] = (entries, out)
    items = plan_items(studies, seeds, args.quick)
    if args.plan:
        rate = macs_per_second()
        todo_s = total_s = 0.0
        done = 0
        #: runs any config of the study trained: a planned run of the same recipe reuses one (run_plan)
        trained = {dataset: {(str(r.run_hash), r.seed): r for r in sweep.read_records(out) if r.run_hash}
                   for dataset, (_, out) in studies.items()}
        for number, (dataset, (entry, budget, seed)) in enumerate(items, 1):
            out = studies[dataset][1]
            finished = sweep.record_path(out, entry.label, entry.config_hash, budget, seed).is_file()
            same = trained[dataset].get((sweep.recipe_hash(sweep.with_budget(entry.config, budget)), seed))
            seconds = estimated_seconds(entry, budget, out, rate)
            total_s += seconds
            done += finished
            todo_s += 0.0 if finished or same is not None else seconds
            state = ("done" if finished else "to do" if same is None else
                     f"reuses the run of {same.label} at budget {same.budget:g} (no training)")
            diag = ("" if budget != 1.0 else
                    ", diagnostics " + ("done" if diagnostics_path(out, entry, seed).is_file() else "to do"))
            print(f"[{number:3d}] {dataset:10s} seed {seed} {entry.label:26s} budget {budget:g}: "
                  f"{state}{diag} (~{seconds / 60:.0f} min)")
        print(f"\n{done} of {len(items)} runs done; to do: ~{todo_s / 3600:.1f} CPU hours of {total_s / 3600:.1f} "
              f"in all (estimate: `hasten estimate` FLOPs at {ESTIMATE_IMAGES_PER_S} training images/s of "
              "small_resnet width 16 at 32 px, the 2-core machine unloaded; a loaded machine is slower, e.g. "
              "2.5x at the 200 images/s the frontier study measured under load)")
        return 0
    if args.rediagnose:
        for dataset, (_, out) in studies.items():
            rediagnose(dataset, [item for d, item in items if d == dataset], out)
    elif (args.queue is not None or until is not None) and not args.report:
        for dataset, (entries, out) in studies.items():
            longer = {e.label: PLATEAU_BUDGETS for (_, _, mode), e in entries.items() if mode is None}
            plan = (study_queue.queue_file_plan(args.queue, list(entries.values()), longer)
                    if args.queue is not None else
                    lambda dataset=dataset: [item for d, item in items if d == dataset])
            bn_of = {e.label: label(optimizer, fraction, None) for (optimizer, fraction, _), e in entries.items()}
            study_queue.run_queue(plan, out, str(args.queue or f"the {dataset} plan"), until,
                                  reference=lambda entry, bn_of=bn_of: bn_of[entry.label],
                                  train=lambda item, dataset=dataset: train_and_diagnose(dataset, item, studies,
                                                                                         args.quick, seeds))
    elif not args.report:
        for number, (dataset, item) in enumerate(items, 1):
            train_and_diagnose(dataset, item, studies, args.quick, seeds, f"[{number}/{len(items)}] {dataset}:")
    for dataset, (entries, out) in studies.items():
        report(dataset, entries, out, args.quick, seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_study(main))
