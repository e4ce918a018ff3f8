"""SSL accuracy-vs-compute frontiers at a *converged* CPU scale (issue 16; `hasten sweep`'s machinery).

    python benchmarks/ssl_frontier.py --plan                 (what would run, what is done, CPU time; trains nothing)
    nice python benchmarks/ssl_frontier.py --seeds 3         (everything not done yet; days on 2 cores, see --plan)
    python benchmarks/ssl_frontier.py --report               (tables from the stored records only)
    python benchmarks/ssl_frontier.py --quick                (tiny sizes on the embedded scenes: checks the script)

SimSiam and BYOL (kNN accuracy, ``knn/acc1``), each with a fully annealed cosine baseline at budgets 1/8,
1/4, 1/2, 3/4 and 1 of a length where it is near its plateau (the frontier), and at 0.6 of that length (the
research's 480 of 800 epochs): F1-CLR, F1-CLR + super-progressive, F1-CLR + Hard Augment, all three. The
recipes are benchmarks/time_to_accuracy.py's SSL suite (``SCALES["cpu"]["ssl"]``: small_resnet width 16,
32 px, batch 128, SimCLR augmentation magnitude 5, SGD cosine lr 0.05, F1-CLR max_lr 0.1 with 1/6 of the
run as warm-up, super-progressive 16->32 px in steps of 4 with magnitude 4->6, Hard Augment m 6 at 12 px,
kNN k 200) at a longer length. A recipe's speed-up is the baseline FLOPs needed for its kNN accuracy,
interpolated on its own method's cosine frontier, / its own FLOPs (hasten.frontier.speedup_against, the
supervised study's definition: benchmarks/frontier.py).

Two references in each table: the untrained network (the SimSiam baseline after 1 step, per seed: kNN reads
only the backbone) and the plateau check (doubling the baseline's length from 1/2 to 1 adds under 2 points
of kNN accuracy; the baseline at 1 is at least +0.15 (embedded) / +0.10 (Imagenette) above the untrained
network); a check that fails says NOT met. The baseline at budget 1 and every 0.6x run are also scored by
a linear probe (``hasten linear-probe``'s function on the run's final checkpoint, 100 epochs on frozen
features), stored as JSON under ``<dataset>/linear_probe/`` right after the run, so it resumes too.

The investigation (``VARIANTS``, after the 3 seeds of the main study): SimSiam at 0.6x with one setting of one
technique changed (F1-CLR's peak LR and warm-up length, super-progressive's r_min, Hard Augment's m, r_sel and
extra targets), each compared per seed with its parent recipe, in its own RESULTS.md section.

Datasets:

* ``embedded``: the procedural scenes with fixed colours (docs/ssl.md: random colours let SSL learn colour
  only), Imagenette's sizes (9469 train, 3925 val images); works on a fresh clone. Length: 740 steps
  (10 epochs) for SimSiam, from a pilot of the simsiam baseline (PILOT below: 370 steps kNN 0.532 / 0.446 on
  seeds 0 / 1, 740 steps 0.447 on seed 0, untrained ~0.24; PILOT 2: +1.7 points 370 -> 740 over 3 seeds):
  most of the kNN gain comes in the first ~150 steps, so 740 sits on the plateau, +0.21 above the untrained
  network. 1480 steps for BYOL, which PILOT 2 shows still learning at 740 (+3.7 points from 370).
* ``imagenette``: ``$HASTEN_SHARED_DATA/imagenette2-128`` or ``../shared/datasets/imagenette2-128`` at
  32 px, skipped with the reason printed when absent. Length: 80 epochs (5918 steps), NOT verified by a
  pilot: RESULTS.md's 5-epoch SSL runs learn nothing measurable (every recipe's kNN = the untrained 0.317),
  and the supervised study needs 80 epochs at these sizes for its plateau; the first seed's plateau and
  learning checks decide whether it holds. ``--plan`` (2026-12-02) estimates 47.5 CPU-hours for its 57 runs
  (3 seeds; a budget-1 baseline run 82 min SimSiam, 107 min BYOL) at the pilot's rate under load, about half
  that on an idle core; the embedded set 10.1 hours (BYOL at 1480 steps; the rate before channels-last).
  If 80 epochs turn out short of the plateau (budget 1/2 -> 1
adds 2 points or more), the next step is 160 epochs, not fewer seeds.

Every (recipe, budget, seed) result is a JSON record under ``benchmarks/results/ssl_frontier/<dataset>/
records/`` (committed, naming the code commit); a rerun skips every run that has one, so the study spans
sessions. Runs are ordered seed-major: per seed the untrained reference and both baselines' frontiers of
every dataset, then every technique. The run folders (checkpoints) and MLflow database are not committed.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_queue
from common import RESULTS_DIR, SMOKE_DIR, ensure_plugins, run_study, write_section
from frontier import Plan, doubling_gain, images_in, located_or_skipped, plan_status, write_entries
from frontier import _relative as relative
from time_to_accuracy import SCALES as TTA_SCALES

from hasten.commands import sweep
from hasten.frontier import FrontierSpeedup, speedup_against

PLUGINS = ("f1clr", "progressive", "hardaug")
METHODS = ("simsiam", "byol")
BASELINE_BUDGETS = (0.125, 0.25, 0.5, 0.75, 1.0)
SHORT_BUDGET = 0.6  # the research's 480 of 800 epochs
EVALS_PER_LENGTH = 4  # kNN passes over the baseline's length (each costs ~17 training steps); the final one counts
METRIC = "knn/acc1"
UNTRAINED = "untrained (1 step, reference)"
PROBE = {"epochs": 100, "lr": 0.1, "batch_size": 256}  # hasten linear-probe's defaults
RECIPE = TTA_SCALES["cpu"]["ssl"]  # the SSL suite's settings: one source for both benchmarks
#: The investigation (issue 16, item 4): one setting of one technique changed at a time, at the 0.6x length, on
#: SimSiam (the research's headline baseline; BYOL costs twice as much). (parent recipe, what changes, plugin
#: settings merged into the parent's). They run after the 3 seeds of the main study, seed-major as it does, and
#: the report compares each with its parent per seed: which setting costs accuracy at this length.
INVESTIGATED = "simsiam"
VARIANTS: tuple[tuple[str, str, Callable[[int], dict[str, dict[str, Any]]]], ...] = (  # settings from the resolution
    ("F1-CLR", "max_lr 0.05 = the baseline's lr", lambda r: {"f1clr": {"max_lr": 0.05}}),
    ("F1-CLR", "warm-up 1/12 of the run", lambda r: {"f1clr": {"warmup_fraction": 1 / 12}}),
    ("F1-CLR", "warm-up 1/3 of the run", lambda r: {"f1clr": {"warmup_fraction": 1 / 3}}),
    ("F1-CLR + super-progressive", "r_min 3/4 of r", lambda r: {"progressive": {"min_resolution": 3 * r // 4}}),
    ("F1-CLR + hard augment", "m 4", lambda r: {"hardaug": {"num_views": 4}}),
    ("F1-CLR + hard augment", "r_sel 1/2 of r", lambda r: {"hardaug": {"selection_resolution": r // 2}}),
    ("F1-CLR + hard augment", "extra targets", lambda r: {"hardaug": {"extra_targets": True}}),
)


def variant_label(parent: str, change: str) -> str:
    return f"{INVESTIGATED} {parent} ({change})"


VARIANT_PARENTS = {variant_label(parent, change): f"{INVESTIGATED} {parent}" for parent, change, _ in VARIANTS}

# PILOT (embedded; simsiam cosine lr 0.05, this script's sizes; run.threads 1 under `nice -n 19` beside two other
# CPU-bound runs on the 2 cores; kNN every 1/4 of the run; wall s include the kNN passes), 2026-12-02:
#   steps  seed  final kNN  kNN during the run (step: kNN)                         wall s
#    370    0    0.532      0.432 (45) 0.486 (91) 0.504 (137) 0.533 (367)     130 (RESULTS.md, 30d3d15, training only)
#    370    1    0.446      0.356 (45) 0.467 (91) 0.478 (137) 0.459 (183) 0.438 (275)  360
#    740    0    0.447      0.428 (184) 0.435 (369) 0.452 (554)                    643
#   1480    0    -          stopped at step 325 to keep the pilot under ~25 CPU-minutes (no kNN yet)
#   untrained (docs/ssl.md, tests/test_ssl.py): ~0.24. The same 92-step run under commit 30d3d15 and this code:
#   kNN 0.4387 and final loss -0.2045 in both (bit-identical), so the 370-step rows compare with this code.
# Reading: most of the kNN gain comes in the first ~100-150 steps; the runs end at 0.45-0.53 (seed spread ~8 points
# at 370 steps; seed 1 peaks at step 137 and falls 3 points by the end, seed 0 still gains 3 points after it);
# doubling 370 -> 740 steps adds nothing (seed 0: -8.5 points, within that spread), and 740 steps are +0.21 above
# the untrained network. Chosen: 740 steps (10 epochs of 9469 images), the shortest length the pilot shows on the
# plateau; budget 1/2 is the 370-step run. The first seed's plateau check tests it with both methods.
# PILOT 2 (2026-12-02, `hasten sweep` of the embedded baselines at 370 and 740 steps, 3 seeds, 1 thread beside
# one study process; records in benchmarks/results/ssl_frontier/embedded/pilot/): simsiam lr 0.05 kNN 0.485,
# 0.446, 0.487 at 370 steps and 0.447, 0.502, 0.508 at 740 (median +1.7 points: the plateau check holds, the
# seed spread is 6 points); simsiam at lr 0.015 (SimSiam's CIFAR rule 0.03 x 128/256) is lower (0.462, 0.396,
# 0.468 / 0.488, 0.468), so the baseline keeps lr 0.05 (the better baseline); byol lr 0.05 is still learning
# at 740 steps (0.424, 0.382 -> 0.465, 0.433 on seeds 0-1): more than 2 points per doubling, so BYOL's
# embedded length needs 1480 steps before its study runs.
#: the converged scale per dataset: the baseline's length and the learning margin over the untrained network
SCALES: dict[str, dict[str, Any]] = {
    # byol: PILOT 2 (below) shows it still learning at 740 steps (+3.7 points 370 -> 740): twice simsiam's length
    "embedded": {"steps": 740, "method_steps": {"byol": 1480}, "train_size": 9469, "val_size": 3925,
                 "margin": 0.15},
    "imagenette": {"epochs": 80, "margin": 0.10},
}
QUICK = {"resolution": 16, "batch": 32, "steps": 20, "width": 4, "train_size": 256, "val_size": 64,
         "knn_bank_size": 64, "probe_epochs": 3}
#: --plan's time model: training + kNN multiply-adds per second of one torch thread on this 2-core machine, from
#: the pilot's 740-step run (9.71e12 training + 0.66e12 kNN multiply-adds in 641 s beside two other CPU-bound
#: runs: 16e9/s); alone on a core the 370-step run of RESULTS.md did 4.85e12 in 130 s (37e9/s), so on an idle
#: machine the estimate is about 2x too long. Plus a fixed cost per run (building, data generation or decoding,
#: fvcore counting, MLflow, the final checkpoint).
CPU_MACS_PER_S = 16e9
RUN_OVERHEAD_S = 20.0


def recipes(dataset: str, quick: bool, threads: int) -> tuple[dict[str, dict[str, Any]], int] | None:
    """label -> config dict (per method: its baseline first) and the first method's baseline length; None if
    data absent. A method's own length (``method_steps``) replaces the scale's where it is set."""
    s = SCALES[dataset]
    res, batch = (QUICK["resolution"], QUICK["batch"]) if quick else (RECIPE["resolution"], RECIPE["batch"])
    data: dict[str, Any]
    if quick or dataset == "embedded":
        sizes = QUICK if quick else s
        # fixed colours: with random ones every scene's colour pair identifies it (docs/ssl.md)
        data = {"dataset": "procedural",
                "options": {"train_size": sizes["train_size"], "val_size": sizes["val_size"], "colours": "fixed"}}
        steps = QUICK["steps"] if quick else s["steps"]
    else:
        found = located_or_skipped(dataset)
        if found is None:
            return None
        data = found
        steps = round(s["epochs"] * images_in(data, {"train_samples": None}) / batch)
    data.update({"resolution": res, "batch_size": batch, "num_workers": 0,
                 "augment": {"preset": "simclr", "magnitude": 5.0}})
    model = {"name": "small_resnet", "options": {"width": QUICK["width"]}} if quick else copy.deepcopy(RECIPE["model"])
    sp_min, sp_step, ha_res = (8, 4, 8) if quick else (RECIPE["sp_min"], RECIPE["sp_step"], RECIPE["ha_resolution"])
    # plugin lengths as fractions of the run: the sweep shortens max_steps (the research: 80 of 480 epochs warm-up)
    f1clr = {"max_lr": RECIPE["max_lr"], "warmup_fraction": 1 / 6, "momentum_low": 0.85, "momentum_high": 0.95}
    progressive = {"mode": "super", "min_resolution": sp_min, "resolution_step": sp_step,
                   "min_magnitude": 4.0, "max_magnitude": 6.0}
    hardaug = {"num_views": 6, "selection_resolution": ha_res}
    out: dict[str, dict[str, Any]] = {}
    first_steps = steps
    for method in METHODS:
        steps = first_steps if quick else s.get("method_steps", {}).get(method, first_steps)
        every = max(1, steps // EVALS_PER_LENGTH)
        base: dict[str, Any] = {
            # every finished run writes its final checkpoint (run.final_checkpoint): the linear probe reads it;
            # checkpoint_every: a run killed at a session's end continues from its newest checkpoint, losing at
            # most 1/12 of the length; channels_last: faster CPU convolutions, the same math (benchmarks/
            # memory_format.py). Neither is part of the recipe's hash.
            "run": {"name": f"{dataset}-{method}", "max_steps": steps, "log_every": max(1, min(50, every)),
                    "progress": False, "threads": threads, "checkpoint_every": max(1, steps // 12),
                    "channels_last": True},
            "data": copy.deepcopy(data),
            "model": copy.deepcopy(model),
            "task": {"name": "ssl", "options": {"method": method,
                                                **({"knn_bank_size": QUICK["knn_bank_size"]} if quick else {})}},
            "optim": {"name": "sgd", "lr": RECIPE["lr"], "momentum": 0.9, "weight_decay": 5e-4},
            "schedule": {"name": "cosine"},  # fully annealed to 0 at each run's own length: the honest baseline
            "eval": {"every_steps": every, "batch_size": 512, "metric": METRIC},
            "tracking": {"artifacts": False},
        }

        def plus(base: dict[str, Any] = base, **plugins: Any) -> dict[str, Any]:
            config = copy.deepcopy(base)
            config["plugins"] = plugins
            config.pop("schedule")  # every technique here has F1-CLR, which owns the LR and momentum
            return config

        if method == METHODS[0]:
            untrained = copy.deepcopy(base)
            untrained["run"]["max_steps"] = 1
            out[UNTRAINED] = untrained
        out[f"{method} cosine"] = base
        out[f"{method} F1-CLR"] = plus(f1clr=f1clr)
        out[f"{method} F1-CLR + super-progressive"] = plus(f1clr=f1clr, progressive=progressive)
        out[f"{method} F1-CLR + hard augment"] = plus(f1clr=f1clr, hardaug=hardaug)
        out[f"{method} F1-CLR + super-progressive + hard augment"] = plus(f1clr=f1clr, progressive=progressive,
                                                                         hardaug=hardaug)
    for parent, change, settings in VARIANTS:
        variant = copy.deepcopy(out[f"{INVESTIGATED} {parent}"])
        for plugin, values in settings(res).items():
            variant["plugins"][plugin].update(values)
        out[variant_label(parent, change)] = variant
    return out, first_steps


def entries_for(dataset: str, out: Path, quick: bool, threads: int) -> dict[str, sweep.SweepConfig] | None:
    found = recipes(dataset, quick, threads)
    if found is None:
        return None
    entries = write_entries(found[0], out, "ssl_frontier", "benchmarks/ssl_frontier.py")
    return {e.label: e for e in entries}


def method_entries(entries: dict[str, sweep.SweepConfig], method: str) -> list[sweep.SweepConfig]:
    """The method's baseline, then its techniques (the investigation's variants not among them)."""
    return [e for label, e in entries.items() if label.startswith(method + " ") and label not in VARIANT_PARENTS]


def baseline_plan(entries: dict[str, sweep.SweepConfig], seed: int) -> Plan:
    """One seed: the untrained reference and every method's cosine frontier."""
    items: Plan = [(entries[UNTRAINED], 1.0, seed)]
    for method in METHODS:
        items += [(method_entries(entries, method)[0], b, seed) for b in BASELINE_BUDGETS]
    return items


def techniques_plan(entries: dict[str, sweep.SweepConfig], seed: int) -> Plan:
    return [(e, SHORT_BUDGET, seed) for method in METHODS for e in method_entries(entries, method)[1:]]


def investigation_plan(entries: dict[str, sweep.SweepConfig], seed: int) -> Plan:
    return [(entries[label], SHORT_BUDGET, seed) for label in VARIANT_PARENTS]


def full_plan(entries: dict[str, sweep.SweepConfig], seeds: int) -> Plan:
    """Every seed's baselines and techniques, then every seed's investigation."""
    main = [item for seed in range(seeds) for item in baseline_plan(entries, seed) + techniques_plan(entries, seed)]
    return main + [item for seed in range(seeds) for item in investigation_plan(entries, seed)]


def probed(entry: sweep.SweepConfig, budget: float) -> bool:
    """Whether a run gets a linear probe: the baselines at budget 1 and every 0.6x run."""
    return entry.label != UNTRAINED and budget == (1.0 if entry.label.endswith(" cosine") else SHORT_BUDGET)


# ------------------------------------------------------------------ linear probe
def probe_path(out: Path, entry: sweep.SweepConfig, budget: float, seed: int) -> Path:
    record = sweep.record_path(out, entry.label, entry.config_hash, budget, seed)
    return out / "linear_probe" / record.parent.name / record.name


def run_probes(items: Plan, out: Path, quick: bool) -> None:
    """A linear probe of every probed run in ``items`` that has a record and no probe yet (its final checkpoint)."""
    from hasten.commands.linear_probe import linear_probe

    for entry, budget, seed in items:
        where = probe_path(out, entry, budget, seed)
        record_file = sweep.record_path(out, entry.label, entry.config_hash, budget, seed)
        if not probed(entry, budget) or where.is_file() or not record_file.is_file():
            continue
        record = sweep.read_record(record_file)
        assert record is not None
        run_dir = sweep.run_dir_path(out, entry.label, entry.config_hash, budget, seed)
        checkpoint = run_dir / "checkpoints" / f"step-{record.steps:09d}.pt"
        name = f"linear probe of {entry.label}, budget {sweep.budget_text(budget)}, seed {seed}"
        if not checkpoint.is_file():
            print(f"{name}: NOT done, no checkpoint at {checkpoint} (the run was trained elsewhere; train it again "
                  "here, after moving its record away, to probe it)", flush=True)
            continue
        config = sweep.with_budget(entry.config, budget)
        config.run.seed = seed
        settings = {**PROBE, **({"epochs": QUICK["probe_epochs"]} if quick else {})}
        metrics = linear_probe(config, checkpoint, **settings)
        sweep.write_json(where, {
            **metrics, **{f"linear_probe.{k}": v for k, v in settings.items()},
            "label": entry.label, "budget": budget, "seed": seed, "run_hash": record.run_hash,
            "checkpoint": relative(checkpoint), "code_commit": sweep.code_commit()})
        print(f"{name}: linear_probe/acc1 {metrics['linear_probe/acc1']:.4f}", flush=True)


def probe_values(out: Path, entry: sweep.SweepConfig, budget: float, seeds: list[int]) -> list[float]:
    found = []
    for seed in seeds:
        path = probe_path(out, entry, budget, seed)
        if path.is_file():
            found.append(float(json.loads(path.read_text(encoding="utf-8"))["linear_probe/acc1"]))
    return found


# ------------------------------------------------------------------ report
def spread(values: list[float], fmt: str = ".4f") -> str:
    if not values:
        return "-"
    mid = format(statistics.median(values), fmt)
    return mid if len(values) == 1 else f"{mid} [{format(min(values), fmt)}, {format(max(values), fmt)}]"


def speedup_spread(per_seed: list[FrontierSpeedup]) -> str:
    """Median [min, max] of the per-seed speed-ups inside the frontier, and what the other seeds are."""
    inside = [p.speedup for p in per_seed if p.status == "inside" and p.speedup is not None]
    parts = [f"{spread(inside, '.2f')}x ({len(inside)} of {len(per_seed)} seeds inside the frontier)"
             if inside else f"none of {len(per_seed)} seeds inside the frontier"]
    for status in ("above", "below"):
        bounds = [p.bound for p in per_seed if p.status == status and p.bound is not None]
        if bounds:
            sign = ">=" if status == "above" else "<="
            parts.append(f"{len(bounds)} {status} ({sign} {', '.join(f'{b:.2f}x' for b in bounds)})")
    return "; ".join(parts)


def checks_text(records: list[sweep.SweepRecord], baseline: str, untrained: list[float], margin: float) -> str:
    """The untrained reference and the plateau and learning checks, each saying met or NOT met."""
    lines = [f"Untrained reference (the {METHODS[0]} config after 1 step, for both methods: kNN reads only the "
             f"backbone; {len(untrained)} seeds): {METRIC} {spread(untrained)}."
             if untrained else f"Untrained reference: not measured yet ({UNTRAINED})."]
    doubled = doubling_gain(records, baseline)
    if doubled is None:
        lines.append("Plateau check: the baseline's budgets 1/2 and 1 are not both measured yet: NOT met (yet).")
        full = next((r for r in sweep.frontier_rows(records) if r.label == baseline and r.budget == 1.0), None)
    else:
        full, half, gain = doubled
        lines.append(
            f"Plateau check ({len(full.values)} seeds at budget 1, {len(half.values)} at 1/2): doubling the length "
            f"from 1/2 to 1 adds {100 * gain:+.2f} points of {METRIC} (median): "
            + ("met (< 2 points)." if gain < 0.02 else "NOT met (criterion: < 2 points).")
            + (" The longer run scores lower: the frontier's envelope keeps the shorter run's value for it."
               if gain <= -0.02 else ""))
    if full is None or not untrained:
        lines.append(f"Learning check (baseline at 1 minus untrained >= +{margin:.2f}): not measurable yet: NOT met "
                     "(yet).")
    else:
        gained = full.median_value - statistics.median(untrained)
        lines.append(f"Learning check: the baseline at budget 1 ({spread(full.values)}) minus the untrained median = "
                     f"{gained:+.3f}: " + (f"met (>= +{margin:.2f})." if gained >= margin
                                           else f"NOT met (criterion: >= +{margin:.2f})."))
    return "\n".join(lines)


def report(dataset: str, entries: dict[str, sweep.SweepConfig], out: Path, quick: bool, seeds: int) -> None:
    # By label and length, not by hash (as benchmarks/frontier.py): a record of another length under the same
    # label (an earlier scale) is left out.
    all_records = sweep.read_records(out)
    untrained = [r.value for r in all_records
                 if r.label == UNTRAINED and r.steps == entries[UNTRAINED].config.run.max_steps]
    for method in METHODS:
        mine = method_entries(entries, method)
        baseline = mine[0]
        planned_steps = {(e.label, b): sweep.with_budget(e.config, b).run.max_steps
                         for e in mine for b in (BASELINE_BUDGETS if e is baseline else (SHORT_BUDGET,))}
        order = {e.label: i for i, e in enumerate(mine)}
        records = sorted((r for r in all_records if planned_steps.get((r.label, r.budget)) == r.steps),
                         key=lambda r: (order[r.label], r.budget, r.seed))
        if not records:
            print(f"{dataset} {method}: no records yet")
            continue
        rows = sweep.frontier_rows(records)
        table = sweep.markdown(rows, records, METRIC, baseline.label)
        plot = sweep.write_plot(rows, METRIC, out / f"frontier-{method}.png", f"{dataset}, {method}: {METRIC} vs "
                                "training FLOPs")
        points = sweep.frontier_points(rows, baseline.label)
        short_rows = [r for r in rows if r.label != baseline.label]
        best = max(short_rows, key=lambda r: r.median_value).label if short_rows else None
        summary = [f"| recipe | budget | seeds | {METRIC} | linear probe acc1 (seeds) | speed-up at equal {METRIC}, "
                   "per seed: median [min, max] |", "|---|---|---|---|---|---|"]
        for row in rows:
            entry = entries[row.label]
            if not probed(entry, row.budget):
                continue
            probes = probe_values(out, entry, row.budget, row.seeds)
            per_seed = [speedup_against(points, r.train_flops, r.value, True)
                        for r in records if r.label == row.label and r.budget == row.budget]
            name = row.label + (" (baseline)" if row.label == baseline.label else "") + (
                " (best 0.6x)" if row.label == best else "")
            summary.append(f"| {name} | {sweep.budget_text(row.budget)} | {len(row.seeds)} | {spread(row.values)} | "
                           f"{spread(probes)} ({len(probes)}) | "
                           f"{'-' if row.label == baseline.label else speedup_spread(per_seed)} |")
        planned = len(BASELINE_BUDGETS) + len(mine) - 1
        commits = sorted({r.code_commit for r in records if r.code_commit})
        config = baseline.config
        stack = mine[-1].config.plugins  # all three techniques
        f1clr, progressive, hardaug = (stack[k] or {} for k in ("f1clr", "progressive", "hardaug"))
        sizes = (f"{config.data.dataset} {config.data.resolution} px"
                 + (" (fixed colours)" if dataset == "embedded" or quick else "")
                 + f", batch {config.data.batch_size}; {config.model.name} {config.model.options}; {method}; "
                 f"baseline length {config.run.max_steps} steps, SGD cosine lr {config.optim.lr} to 0 at budgets "
                 f"{', '.join(f'{b:g}' for b in BASELINE_BUDGETS)}; at {SHORT_BUDGET:g}: F1-CLR max_lr "
                 f"{f1clr['max_lr']} warm-up {f1clr['warmup_fraction']:.3g} of the run, super-progressive "
                 f"{progressive['min_resolution']}->{config.data.resolution} px in steps of "
                 f"{progressive['resolution_step']} with magnitude {progressive['min_magnitude']:g}->"
                 f"{progressive['max_magnitude']:g}, Hard Augment m {hardaug['num_views']} at "
                 f"{hardaug['selection_resolution']} px; kNN k 200 every {config.eval.every_steps} steps; linear "
                 f"probe {QUICK['probe_epochs'] if quick else PROBE['epochs']} epochs on frozen features (the "
                 f"baseline at 1 and every {SHORT_BUDGET:g}x run)")
        body = "\n".join([
            f"Scale: {'quick (smoke) sizes, ' if quick else ''}{sizes}.",
            "",
            f"Held: {len(records)} of {planned * seeds} planned runs of {method} ({planned} per seed x {seeds} "
            f"seeds; the untrained reference besides); seeds with results: "
            f"{', '.join(map(str, sorted({r.seed for r in records})))}. Each row says how many seeds it holds.",
            f"Records: `{relative(out / 'records')}`, linear probes `{relative(out / 'linear_probe')}`; code "
            f"commits of the runs: {', '.join(commits) or 'unknown'}.",
            "",
            checks_text(records, baseline.label, untrained, SCALES[dataset]["margin"]),
            "",
            table,
            "",
            f"Per seed against the {baseline.label} frontier (of the medians), with the linear probe:",
            "",
            "\n".join(summary),
        ])
        write_section(f"ssl_frontier/{dataset}/{method}", f"SSL frontier at the converged scale: {dataset}, {method}",
                      body, quick=quick, plot=plot)
    investigation_report(dataset, entries, out, quick, seeds, all_records)


def investigation_report(dataset: str, entries: dict[str, sweep.SweepConfig], out: Path, quick: bool, seeds: int,
                         all_records: list[sweep.SweepRecord]) -> None:
    """Each variant against its parent recipe, paired per seed, and against the cosine frontier."""
    steps = sweep.with_budget(entries[f"{INVESTIGATED} cosine"].config, SHORT_BUDGET).run.max_steps
    wanted = set(VARIANT_PARENTS) | set(VARIANT_PARENTS.values())
    short = {(r.label, r.seed): r for r in all_records
             if r.label in wanted and r.budget == SHORT_BUDGET and r.steps == steps}
    if not any(label in VARIANT_PARENTS for label, _ in short):
        print(f"{dataset} investigation: no records yet")
        return
    baseline = f"{INVESTIGATED} cosine"
    frontier_steps = {b: sweep.with_budget(entries[baseline].config, b).run.max_steps for b in BASELINE_BUDGETS}
    rows = sweep.frontier_rows([r for r in all_records if r.label == baseline
                                and frontier_steps.get(r.budget) == r.steps])
    points = sweep.frontier_points(rows, baseline)
    lines = [f"| recipe | changed from its parent | seeds | {METRIC} | parent's {METRIC} (same seeds) | change, "
             "points, paired: median [min, max] | training FLOPs / parent's | speed-up at equal "
             f"{METRIC} against the {baseline} frontier |", "|---|---|---|---|---|---|---|---|"]
    for parent, change, _ in VARIANTS:
        label = variant_label(parent, change)
        mine = sorted((r for (lab, _), r in short.items() if lab == label), key=lambda r: r.seed)
        if not mine:
            lines.append(f"| {INVESTIGATED} {parent} | {change} | 0 | not run yet | | | | |")
            continue
        paired = [(r, short[(f"{INVESTIGATED} {parent}", r.seed)]) for r in mine
                  if (f"{INVESTIGATED} {parent}", r.seed) in short]
        change_points = [100 * (r.value - q.value) for r, q in paired]
        flops_ratio = [r.train_flops / q.train_flops for r, q in paired]
        per_seed = [speedup_against(points, r.train_flops, r.value, True) for r in mine] if points else []
        lines.append(f"| {INVESTIGATED} {parent} | {change} | {len(mine)} | {spread([r.value for r in mine])} | "
                     f"{spread([q.value for _, q in paired])} | {spread(change_points, '+.2f')} | "
                     f"{spread(flops_ratio, '.2f')} | {speedup_spread(per_seed) if per_seed else '-'} |")
    commits = sorted({r.code_commit for (lab, _), r in short.items() if lab in VARIANT_PARENTS and r.code_commit})
    held = sum(1 for label, _ in short if label in VARIANT_PARENTS)
    body = "\n".join([
        f"One setting of one technique changed at a time, {INVESTIGATED}, budget {SHORT_BUDGET:g} ({steps} steps), "
        f"the rest of the recipe as in the {INVESTIGATED} section above; `VARIANTS` in benchmarks/ssl_frontier.py. "
        f"Held: {held} of {len(VARIANTS) * seeds} planned runs ({len(VARIANTS)} variants x {seeds} seeds); code "
        f"commits: {', '.join(commits) or 'unknown'}. A change is the variant minus its parent on the same seed.",
        "",
        "\n".join(lines),
    ])
    write_section(f"ssl_frontier/{dataset}/investigation", f"SSL frontier investigation: {dataset}, "
                  f"{INVESTIGATED} at {SHORT_BUDGET:g}x, one setting at a time", body, quick=quick)


# ------------------------------------------------------------------ plan
def estimate(entries: dict[str, sweep.SweepConfig], items: Plan, done: list[bool]) -> tuple[float, float]:
    """Print the estimated CPU seconds of each planned run; (seconds of all, seconds of those to do).

    FLOPs from ``hasten estimate``'s walk of each recipe at its full length (hasten.commands.estimate.plan,
    scaled by the budget's steps), the kNN passes from the backbone's forward cost; seconds from
    CPU_MACS_PER_S and RUN_OVERHEAD_S.
    """
    from hasten.commands import estimate as hasten_estimate

    per_step: dict[str, float] = {}
    for label, entry in entries.items():
        if label == UNTRAINED:
            continue
        with hasten_estimate._dry_config(entry.config, without_plugins=False) as dry:
            planned = hasten_estimate.plan(dry)
        # BYOL's momentum encoder (both views forward, counted in training as an overhead the walk does not
        # see) costs about a third of the training step's 3 forwards: approximated as such
        momentum = 4 / 3 if entry.config.task.options.get("method") == "byol" else 1.0
        per_step[label] = momentum * planned.total_flops / planned.steps
    base = entries[f"{METHODS[0]} cosine"].config
    per_step[UNTRAINED] = per_step[f"{METHODS[0]} cosine"]
    # a kNN pass forwards the bank (the train split) and the val split once; a training step is 3 forwards of
    # two views of the batch (the heads' share is small and counted as backbone: an over-estimate)
    train_images = base.task.options.get("knn_bank_size") or _split_size(base, "train")
    knn_flops = per_step[UNTRAINED] / (6 * base.data.batch_size) * (train_images + _split_size(base, "val"))
    total = todo = 0.0
    per_run: dict[tuple[str, float], tuple[int, float]] = {}
    for (entry, budget, _), is_done in zip(items, done, strict=True):
        steps = sweep.with_budget(entry.config, budget).run.max_steps or 0
        evals = steps // entry.config.eval.every_steps + 1
        seconds = (steps * per_step[entry.label] + evals * knn_flops) / CPU_MACS_PER_S + RUN_OVERHEAD_S
        per_run[(entry.label, budget)] = (steps, seconds)
        total += seconds
        todo += 0.0 if is_done else seconds
    print(f"  {'run (each seed)':56s}{'steps':>7}{'est. CPU min':>14}")
    for (label, budget), (steps, seconds) in per_run.items():
        print(f"  {f'{label} b{sweep.budget_text(budget)}':56s}{steps:>7}{seconds / 60:>14.1f}")
    return total, todo


def _split_size(config: Any, split: str) -> int:
    options = config.data.options
    if config.data.dataset == "procedural":
        return int(options[f"{split}_size"])
    return images_in({"path": config.data.path}, {"train_samples": None}, split)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=(*SCALES, "all"), default="all")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per run (default 3; --quick: 1)")
    parser.add_argument("--threads", type=int, default=1, help="run.threads of every run (default 1)")
    parser.add_argument("--plan", action="store_true", help="list the planned runs, which are done, the estimated "
                        "CPU time; train nothing")
    parser.add_argument("--report", action="store_true", help="write the tables from the stored records; train nothing")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the embedded scenes (smoke check), "
                        "written under benchmarks/results/smoke/")
    study_queue.add_arguments(parser)
    args = parser.parse_args()
    until = study_queue.checked_arguments(parser, args)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        parser.error("--seeds: at least 1")
    ensure_plugins(PLUGINS)
    datasets = tuple(SCALES) if args.dataset == "all" else (args.dataset,)
    if args.quick and args.dataset == "all":
        datasets = ("embedded",)  # the smoke check: one dataset (imagenette's quick sizes are the same scenes)
    root = (SMOKE_DIR if args.quick else RESULTS_DIR) / "ssl_frontier"
    studies = {}
    for dataset in datasets:
        out = root / dataset
        entries = entries_for(dataset, out, args.quick, args.threads)
        if entries is not None:
            studies[dataset] = (entries, out)
    if (args.queue is not None or until is not None) and not (args.plan or args.report):
        for dataset, (entries, out) in studies.items():
            plan = (study_queue.queue_file_plan(args.queue, list(entries.values())) if args.queue is not None else
                    lambda entries=entries: full_plan(entries, args.seeds))

            def train(item: study_queue.Item, out: Path = out) -> None:
                sweep.run_plan([item], out)
                run_probes([item], out, args.quick)  # now: the run's checkpoint may not outlive the session

            study_queue.run_queue(plan, out, str(args.queue or f"the {dataset} plan"), until,
                                  reference=lambda entry: f"{entry.label.split()[0]} cosine"
                                  if entry.label != UNTRAINED else f"{METHODS[0]} cosine", train=train)
            report(dataset, entries, out, args.quick, args.seeds)
        return 0
    if not args.report:
        steps = [(seed, dataset, part) for seed in range(args.seeds) for part in ("baseline", "techniques")
                 for dataset in studies]
        steps += [(seed, dataset, "investigation") for seed in range(args.seeds) for dataset in studies]
        parts = {"baseline": baseline_plan, "techniques": techniques_plan, "investigation": investigation_plan}
        planned: dict[str, tuple[Plan, list[bool]]] = {}
        for seed, dataset, part in steps:
            entries, out = studies[dataset]
            items = parts[part](entries, seed)
            if args.plan:
                items_done = planned.setdefault(dataset, ([], []))
                items_done[0].extend(items)
                items_done[1].extend(plan_status(dataset, out, items))
                continue
            sweep.run_plan(items, out)
            run_probes(items, out, args.quick)
            report(dataset, entries, out, args.quick, args.seeds)
        for dataset, (items, done) in planned.items():
            print(f"\n{dataset}: estimated CPU time per run (one torch thread at the pilot's "
                  f"{CPU_MACS_PER_S / 1e9:.1f} GMAC/s, training and kNN passes, + {RUN_OVERHEAD_S:g} s a run)")
            total, todo = estimate(studies[dataset][0], items, done)
            print(f"{dataset}: {sum(done)} of {len(items)} runs done; estimated CPU time: all {total / 3600:.1f} h, "
                  f"still to do {todo / 3600:.1f} h (one run at a time; the linear probes add about a kNN pass "
                  "each)")
    if not args.plan:
        for dataset, (entries, out) in studies.items():
            report(dataset, entries, out, args.quick, args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_study(main))
