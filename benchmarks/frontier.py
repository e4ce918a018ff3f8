"""Supervised accuracy-vs-compute frontiers at a *converged* CPU scale (`hasten sweep`'s machinery).

    python benchmarks/frontier.py --plan                        (what would run, what is done; trains nothing)
    nice python benchmarks/frontier.py --seeds 3                (everything not done yet; hours on 2 cores)
    python benchmarks/frontier.py --report                      (tables from the stored records only)
    python benchmarks/frontier.py --quick                       (tiny sizes on the embedded data: checks the script)
    python benchmarks/frontier.py --scale gpu-short [--plan]    (suite in < 8 min on one H200: gpu_short.sh)
    nice python benchmarks/frontier.py --dataset imagenette --queue Q --until 20:30   (a session: study_queue.py)

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

``--scale gpu-short`` runs the same recipes on one CUDA GPU (bf16, channels-last, the DALI GPU pipeline),
Imagenette at 64 px, one seed by default, sized from ``hasten estimate``'s FLOPs and a stated time model
to take under 8 minutes on an H200; records under ``benchmarks/results/frontier-gpu-short/<dataset>/``.
``--plan`` prints the planned FLOPs and the estimated minutes.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_queue
import yaml
from common import REPO, RESULTS_DIR, SMOKE_DIR, ensure_plugins, run_study, shared_datasets, write_section

from hasten.commands import sweep

PLUGINS = ("selection", "cooldown", "f1clr", "progressive")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
SHORT_BUDGETS = (0.5, 2 / 3)
EVALS_PER_LENGTH = 8

#: the converged scale, per dataset: the baseline's full length and the techniques' settings
SCALES: dict[str, dict[str, Any]] = {
    # 40 epochs left Imagenette short of its plateau (20 -> 40 epochs: +3 points, trainset/acc1 0.86 at 30):
    # 80 epochs; budgets 1/16 and 3/8 are the 5- and 30-epoch runs measured then (reused: same runs).
    # Budget 2 (160 epochs) is the plateau check itself: 40 -> 80 epochs still added 1.3 points (1 seed), so
    # whether 80 epochs is within a point of the plateau is measured by doubling it, not assumed.
    "imagenette": {"resolution": 32, "channels": 3, "batch": 128, "epochs": 80, "train_samples": None,
                   "width": 16, "lr": 0.1, "selection_resolution": 14, "sp_min": 16, "sp_step": 4,
                   "budgets": (0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 2.0)},
    "fashion_mnist": {"resolution": 28, "channels": 1, "batch": 128, "epochs": 40, "train_samples": 10000,
                      "width": 16, "lr": 0.1, "selection_resolution": 12, "sp_min": 16, "sp_step": 4,
                      "budgets": (0.125, 0.25, 0.5, 0.75, 1.0)},
}
QUICK = {"resolution": 16, "batch": 32, "steps": 24, "width": 4, "train_samples": 512}

#: the gpu-short scale: the supervised suite in under 8 minutes on one H200-class GPU (benchmarks/README.md).
#: The CPU scale's model 3x wider at twice the resolution, its stem at stride 2: the feature maps keep the CPU
#: scale's sizes (32 px -> 32x32 after the stem). Imagenette only: Fashion-MNIST is skipped at this scale (its
#: IDX arrays are in memory, so there is no decoding for the DALI GPU pipeline to take over, and the 8 minutes
#: go to one dataset).
GPU_SHORT: dict[str, dict[str, Any]] = {
    "imagenette": {"resolution": 64, "channels": 3, "batch": 512, "epochs": 20, "train_samples": None,
                   "width": 48, "model_options": {"width": 48, "stem_stride": 2},
                   # square-root scaling of the CPU scale's 0.1 at batch 128 (linear would be 0.4, and the
                   # cosine baseline has no warm-up)
                   "lr": 0.2, "selection_resolution": 28, "sp_min": 32, "sp_step": 8, "proxy_width": 12,
                   "budgets": (0.125, 0.25, 0.5, 0.75, 1.0)},
}
SCALE_SETTINGS = {"converged": SCALES, "gpu-short": GPU_SHORT}
GPU_RUN = {"device": "cuda", "precision": "bf16", "channels_last": True}
GPU_DATA = {"loader": "dali", "dali_device": "gpu", "num_workers": 12}  # DALI threads; 16 cores, 4 for the trainer
GPU_THREADS = 4
GPU_EVAL_BATCH = 1024
GPU_LIMIT_S = 8 * 60

# The time model of `--scale gpu-short --plan` (assumptions, not measurements):
#  * compute: 20e12 multiply-adds/s sustained (hasten counts fvcore multiply-adds; a training step is 3x the
#    forward). Reference: the cifar10-airbench README (github.com/KellerJordan/cifar10-airbench) times the
#    standard CIFAR-10 ResNet-18 training (96.0%) at 7 min for 32.3 PFLOPs on a 400 W A100, i.e. 77 TFLOP/s
#    = 38e12 multiply-adds/s, and airbench94 at 0.36 PFLOPs in 3.83 s (94 TFLOP/s) with a hand-tuned loop.
#    We assume about half the ResNet-18 figure and no credit for the H200's ~3x higher bf16 peak: convnets
#    this small are bound by memory traffic and kernel launches, and hasten runs eager PyTorch with hooks
#    each step (no torch.compile). 30-40% of the ~990 TFLOP/s dense bf16 peak is not reachable here.
#  * loading: 25,000 images/s through the DALI GPU pipeline (nvJPEG decode of 128 px JPEGs, resize, crop,
#    flip), not overlapped with compute (the pipeline runs one iteration at a time, on torch's stream);
#    benchmarks/loader_throughput.py measures the real figure.
#  * per step 5 ms of Python, hooks and launches; per run 10 s (build, fvcore counting per resolution,
#    cuDNN autotuning, the DALI pipeline, decoding the validation images once, MLflow) plus evaluation.
GPU_MACS_PER_S = 20e12
GPU_LOADER_IMAGES_PER_S = 25_000
GPU_STEP_OVERHEAD_S = 0.005
GPU_RUN_OVERHEAD_S = 10.0


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


def located_or_skipped(dataset: str) -> dict[str, Any] | None:
    """``dataset``'s data section, or None after printing why it is skipped (absent data never fails a study)."""
    found, why = locate(dataset)
    if found is None:
        print(f"skipped {dataset}: {why}", flush=True)
    return found


def _relative(path: Path) -> str:
    """A path relative to the repository when it can be (record hashes then match across checkouts)."""
    try:
        return os.path.relpath(path.resolve(), REPO)
    except ValueError:
        return str(path)


def images_in(data: dict[str, Any], scale: dict[str, Any], split: str = "train") -> int:
    if scale.get("train_samples") and split == "train":
        return int(scale["train_samples"])
    root = REPO / data["path"]
    return sum(1 for p in (root / split).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def recipes(dataset: str, quick: bool, threads: int,
            scale: str = "converged") -> tuple[dict[str, dict[str, Any]], int] | None:
    """label -> config dict (the baseline first) and the baseline's length in steps; None if data absent.

    ``scale`` "gpu-short" adds the GPU settings (CUDA, bf16, channels-last, the DALI GPU pipeline) to the
    same recipes; the converged scale's recipes are left exactly as they are (their records keep matching).
    """
    s = SCALE_SETTINGS[scale][dataset]
    if quick:
        data: dict[str, Any] = {"dataset": "procedural", "options": {"train_size": 1024, "val_size": 256}}
        res, batch, width, steps = QUICK["resolution"], QUICK["batch"], QUICK["width"], QUICK["steps"]
        sel_res, sp_min, sp_step = 8, 8, 4
    else:
        found = located_or_skipped(dataset)
        if found is None:
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
        # checkpoint_every: a run killed (a session's end) continues from its newest checkpoint, losing at
        # most 1/12 of the length. channels_last: 1.4x faster steps on the CPU (benchmarks/memory_format.py),
        # the same math; the runs recorded before 2026-12-02 15:00 UTC trained contiguous. Neither is part
        # of the recipe (hash), so earlier records stay valid.
        "run": {"name": dataset, "max_steps": steps, "log_every": max(1, min(50, every)), "progress": False,
                "threads": threads, "checkpoint_every": max(1, steps // 12), "channels_last": True},
        "data": data,
        "model": {"name": "small_resnet", "options": {"width": width}},
        "optim": {"name": "sgd", "lr": s["lr"], "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},  # fully annealed to 0 at each run's own length: the honest baseline
        "eval": {"every_steps": every, "batch_size": 512, "train_subset": 1024},
        "tracking": {"artifacts": False},
    }
    gpu = scale == "gpu-short"
    if gpu:
        base["run"].update(GPU_RUN)
        base["data"].update(GPU_DATA)
        base["eval"]["batch_size"] = GPU_EVAL_BATCH
        if not quick:
            base["model"]["options"] = dict(s["model_options"])
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

    configs = {
        "uniform": base,
        "selection + cool-down": plus(selection=selection, cooldown=cooldown),
        # beyond the research: scored at 3/4 of the training side with batch statistics, since
        # benchmarks/scoring_fidelity.py measured the default r_hat (~0.43 of the side, eval mode) ranking
        # samples almost unlike the training loss (Spearman 0.32 on Fashion-MNIST; 0.81 at 20 px, train mode)
        "selection (3/4-res train-mode score) + cool-down": plus(
            selection={**selection, "selection_resolution": 4 * round(0.75 * res / 4), "scoring_mode": "train_restore"},
            cooldown=cooldown),
        "selection, no cool-down": plus(selection=selection),
        "greedy + cool-down": plus(selection={**selection, "strategy": "greedy"}, cooldown=cooldown),
        "super-progressive + F1-CLR": plus(progressive=progressive, f1clr=f1clr),
        "fast (selection + super-progressive + F1-CLR)": plus(selection=selection, progressive=progressive,
                                                              f1clr=f1clr),
        # hasten-selection's scoring variants beyond the research (plugins/selection/README.md)
        "selection (loss memory) + cool-down": plus(selection={**selection, "scoring": "memory"}, cooldown=cooldown),
        "selection (proxy) + cool-down": plus(selection={**selection, "scoring": "proxy",
                                                         "proxy_width": s["proxy_width"] if gpu and not quick else 4},
                                              cooldown=cooldown),
    }
    if not gpu:  # the CPU study's additions (the gpu-short suite keeps to its 8 minutes)
        configs.update({
            # which half of super-progressive + F1-CLR costs or buys accuracy: each alone
            "super-progressive (cosine)": plus(progressive=progressive),
            "F1-CLR": plus(f1clr=f1clr),
            # the minimum side measured: from 3/4 of the side instead (Fashion-MNIST: 16 of 28 px cost accuracy)
            "super-progressive from 3/4 of the side + F1-CLR": plus(
                progressive={**progressive, "min_resolution": 4 * round(0.75 * res / 4)}, f1clr=f1clr),
            # the two readings above the frontier stacked (beyond the research): loss-memory selection (no
            # scoring forward) with super-progressive + F1-CLR
            "fast, loss memory (selection + super-progressive + F1-CLR)": plus(
                selection={**selection, "scoring": "memory"}, progressive=progressive, f1clr=f1clr),
            # InfoBatch's unbiased pruning (beyond the research; docs/methods.md section 5.1) with its defaults:
            # r = 0.5, the loss of each sample's last training forward, full data over the last 12.5%
            "pruning (loss memory) + cool-down": plus(
                selection={**selection, "strategy": "pruned", "scoring": "memory"}, cooldown={"fraction": 0.125}),
        })
    return configs, steps


def entries_for(dataset: str, out: Path, quick: bool, threads: int,
                scale: str = "converged") -> list[sweep.SweepConfig] | None:
    found = recipes(dataset, quick, threads, scale)
    if found is None:
        return None
    configs, _ = found
    return write_entries(configs, out, "frontier", "benchmarks/frontier.py")


def write_entries(configs: dict[str, dict[str, Any]], out: Path, experiment: str,
                  writer: str) -> list[sweep.SweepConfig]:
    """Each config (label -> dict) written as ``out/configs/<label>.yaml`` and loaded as a sweep entry.

    The runs are tracked in ``out/mlflow.db`` (experiment ``experiment``) and trained under ``out/runs``.
    """
    folder = out / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = [f"tracking.uri=sqlite:///{(out / 'mlflow.db').resolve()}", f"tracking.experiment={experiment}",
                 f"run.output_dir={out / 'runs'}"]
    entries = []
    for label, config in configs.items():
        path = folder / (sweep._slug(label) + ".yaml")
        path.write_text(f"# written by {writer}; budgets and seeds are set by the sweep\n"
                        + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        entries.extend(sweep.prepare([str(path)], overrides, [1.0], 1, [label]))
    return entries


Plan = list[study_queue.Item]


def baseline_plan(dataset: str, entries: list[sweep.SweepConfig], seed: int, scale: str = "converged") -> Plan:
    """One seed of a dataset's baseline frontier."""
    return [(entries[0], b, seed) for b in SCALE_SETTINGS[scale][dataset]["budgets"]]


def techniques_plan(entries: list[sweep.SweepConfig], seed: int) -> Plan:
    """One seed of every technique at the short budgets."""
    return [(e, b, seed) for e in entries[1:] for b in SHORT_BUDGETS]


def doubling_gain(records: list[sweep.SweepRecord],
                  baseline: str) -> tuple[sweep.FrontierRow, sweep.FrontierRow, float] | None:
    """The baseline's last doubling: its rows at the largest budget b >= 1 whose b/2 is measured too (2 and 1
    where a plateau run at twice the length exists, else 1 and 1/2), and the median metric gained from b/2 to b;
    None if no such pair is measured."""
    rows = {r.budget: r for r in sweep.frontier_rows(records) if r.label == baseline}
    for top in sorted((b for b in rows if b >= 1 and b / 2 in rows), reverse=True):
        return rows[top], rows[top / 2], rows[top].median_value - rows[top / 2].median_value
    return None


def plan_status(dataset: str, out: Path, items: Plan) -> list[bool]:
    """Print one line per planned run (done or to do); whether each is done."""
    done = []
    for entry, budget, seed in items:
        done.append(sweep.record_path(out, entry.label, entry.config_hash, budget, seed).is_file())
        print(f"{dataset:14s} seed {seed} {entry.label:48s} budget {budget:.3g}: "
              f"{'done' if done[-1] else 'to do'}")
    return done


def plateau_text(records: list[sweep.SweepRecord], baseline: str, metric: str) -> str:
    """The baseline's plateau check: doubling from budget 1/2 to 1, and its training-set accuracy."""
    doubled = doubling_gain(records, baseline)
    if doubled is None:
        return "Plateau check: the baseline's budgets 0.5 and 1 are not both measured yet."
    full, half, gain = doubled
    train = f"{min(full.trainset_acc1):.3f}-{max(full.trainset_acc1):.3f}" if full.trainset_acc1 else "n/a"
    ok = gain < 0.01 and bool(full.trainset_acc1) and min(full.trainset_acc1) >= 0.9
    top, low = sweep.budget_text(full.budget), sweep.budget_text(half.budget)
    rows = {r.budget: r for r in sweep.frontier_rows(records) if r.label == baseline}
    earlier = [f"{sweep.budget_text(b / 2)} -> {sweep.budget_text(b)}: "
               f"{100 * (rows[b].median_value - rows[b / 2].median_value):+.2f}"
               for b in sorted(rows) if b / 2 in rows and b < full.budget]
    return (f"Plateau check ({_seeds(len(full.values))} at budget {top}, {len(half.values)} at {low}): doubling the "
            f"length from {low} to {top} adds {100 * gain:+.2f} points of {metric} (median); trainset/acc1 at "
            f"budget {top}: {train}. " + ("Converged by the criterion (< 1 point, >= 0.9)." if ok
                                          else "NOT converged by the criterion (< 1 point and trainset/acc1 >= 0.9).")
            + (f" Earlier doublings (points): {'; '.join(earlier)}." if earlier else ""))


def _seeds(count: int) -> str:
    return f"{count} seed{'' if count == 1 else 's'}"


def report(dataset: str, entries: list[sweep.SweepConfig], out: Path, quick: bool, seeds: int,
           scale: str = "converged") -> None:
    # By label and length, not by hash: a record stays this study's when a later hasten version hashes
    # configs differently; a record of another length under the same label (an earlier scale) is left out.
    s = SCALE_SETTINGS[scale][dataset]
    planned_steps = {(e.label, b): sweep.with_budget(e.config, b).run.max_steps
                     for e in entries for b in (s["budgets"] if e is entries[0] else SHORT_BUDGETS)}
    if quick:
        planned_steps = {(e.label, b): sweep.with_budget(e.config, b).run.max_steps
                         for e in entries for b in (*s["budgets"], *SHORT_BUDGETS)}
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
    planned = len(s["budgets"]) + len(SHORT_BUDGETS) * (len(entries) - 1)
    done_seeds = sorted({r.seed for r in records})
    commits = sorted({r.code_commit for r in records if r.code_commit})
    model = ", ".join(f"{k} {v}" for k, v in s.get("model_options", {"width": s["width"]}).items())
    gpu = (f"; CUDA, bf16, channels-last, DALI GPU pipeline ({GPU_DATA['num_workers']} threads)"
           if scale == "gpu-short" else "")
    sizes = (f"small_resnet {model}, {s['resolution']} px, batch {s['batch']}, baseline length "
             f"{entries[0].config.run.max_steps} steps ({s['epochs']} epochs"
             + (f" of a fixed {s['train_samples']}-image training subset" if s["train_samples"] else "")
             + f"), SGD lr {s['lr']} nesterov, cosine to 0; baseline budgets "
             f"{', '.join(f'{b:g}' for b in s['budgets'])}; techniques at "
             f"{', '.join(f'{b:.3g}' for b in SHORT_BUDGETS)}; selection at {s['selection_resolution']} px, "
             f"beta 1, 2x candidates, cool-down 10%; super-progressive {s['sp_min']}->{s['resolution']} px in steps of "
             f"{s['sp_step']}; F1-CLR peak = the baseline's lr, warm-up 10%{gpu}")
    body = "\n".join([
        f"Scale: {'quick (smoke) of ' if quick else ''}{scale}: {sizes}.",
        "",
        f"Held: {len(records)} of {planned * seeds} planned runs ({planned} per seed x {seeds} seeds); seeds with "
        f"results: {', '.join(map(str, done_seeds))}. Each row says how many seeds it holds.",
        f"Records: `{_relative(out / 'records')}`; code commits of the runs: {', '.join(commits) or 'unknown'}.",
        "",
        plateau_text(records, entries[0].label, metric),
        "",
        table,
    ])
    section = "frontier" if scale == "converged" else f"frontier-{scale}"
    write_section(f"{section}/{dataset}", f"Supervised frontier at the {scale} scale: {dataset}", body,
                  quick=quick, plot=plot)


def estimate_gpu_short(dataset: str, entries: list[sweep.SweepConfig], items: Plan,
                       quick: bool) -> tuple[float, float]:
    """Print the planned FLOPs, samples loaded and estimated seconds of ``items``; (total FLOPs, seconds).

    FLOPs come from ``hasten estimate``'s walk (hasten.commands.estimate.plan), on a copy of each config with
    the device and loader set to the CPU (they change no FLOPs, and the walk then builds anywhere); the
    seconds from the time model above (GPU_MACS_PER_S and the lines below it).
    """
    from hasten.commands import estimate

    found, _ = locate(dataset)
    val_images = 256 if quick or found is None else images_in(found, GPU_SHORT[dataset], "val")
    total_flops = total_s = 0.0
    print(f"\n{dataset}: planned cost at the gpu-short scale (time model: {GPU_MACS_PER_S / 1e12:g}e12 "
          f"multiply-adds/s, {GPU_LOADER_IMAGES_PER_S} images/s loaded, {1000 * GPU_STEP_OVERHEAD_S:g} ms/step, "
          f"{GPU_RUN_OVERHEAD_S:g} s/run)")
    print(f"  {'run':56s}{'steps':>7}{'FLOPs (MACs)':>14}{'loaded':>10}{'est. s':>8}")
    for entry, budget, seed in items:
        config = sweep.with_budget(entry.config, budget)
        config.run.device, config.run.precision, config.run.channels_last = "cpu", "fp32", False
        config.data.loader, config.data.num_workers = "torch", 0
        with estimate._dry_config(config, without_plugins=False) as dry:
            planned = estimate.plan(dry)
        evals = planned.steps // config.eval.every_steps + 1
        forward = planned.phases[-1].train_flops / (3 * planned.batch_size * planned.phases[-1].steps)
        eval_flops = evals * (val_images + (config.eval.train_subset or 0)) * forward
        seconds = ((planned.total_flops + eval_flops) / GPU_MACS_PER_S
                   + planned.samples_loaded / GPU_LOADER_IMAGES_PER_S
                   + planned.steps * GPU_STEP_OVERHEAD_S + GPU_RUN_OVERHEAD_S)
        total_flops += planned.total_flops
        total_s += seconds
        print(f"  {f'{entry.label} b{budget:.3g} s{seed}':56s}{planned.steps:>7}{planned.total_flops:>14.3e}"
              f"{planned.samples_loaded:>10}{seconds:>8.1f}")
    print(f"  total: {total_flops:.3e} training FLOPs (multiply-adds, overhead included), "
          f"estimated {total_s / 60:.1f} min (limit {GPU_LIMIT_S / 60:g} min)")
    return total_flops, total_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("imagenette", "fashion_mnist", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per run (default 3; gpu-short: 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"run.threads of every run (default 1 for background runs; gpu-short: {GPU_THREADS})")
    parser.add_argument("--scale", choices=tuple(SCALE_SETTINGS), default="converged",
                        help="converged: the CPU study (hours on 2 cores); gpu-short: the supervised suite in under "
                        "8 minutes on one H200-class GPU (Imagenette; records under results/frontier-gpu-short/)")
    parser.add_argument("--plan", action="store_true", help="list the planned runs and which are done; train nothing")
    parser.add_argument("--report", action="store_true", help="write the tables from the stored records; train nothing")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the embedded data (smoke check)")
    study_queue.add_arguments(parser)
    args = parser.parse_args()
    until = study_queue.checked_arguments(parser, args)
    if args.seeds is None:
        args.seeds = 1 if args.scale == "gpu-short" else 3
    if args.seeds < 1:
        parser.error("--seeds: at least 1")
    scale = args.scale
    threads = args.threads or (GPU_THREADS if scale == "gpu-short" else 1)
    if scale == "gpu-short" and not (args.plan or args.report):
        import torch

        if not torch.cuda.is_available():
            print("--scale gpu-short: needs a CUDA GPU, and torch sees none here; `--plan` lists the runs and "
                  "the estimate on any machine", file=sys.stderr)
            return 2
    ensure_plugins(PLUGINS)
    datasets = ("imagenette", "fashion_mnist") if args.dataset == "all" else (args.dataset,)
    folder = "frontier" if scale == "converged" else f"frontier-{scale}"
    root = (SMOKE_DIR / folder) if args.quick else (RESULTS_DIR / folder)
    studies = {}
    for dataset in datasets:
        if dataset not in SCALE_SETTINGS[scale]:
            print(f"skipped {dataset}: not part of the {scale} scale (see benchmarks/README.md)", flush=True)
            continue
        out = root / dataset
        entries = entries_for(dataset, out, args.quick, threads, scale)
        if entries is not None:
            studies[dataset] = (entries, out)
    planned_items: dict[str, Plan] = {}
    if (args.queue is not None or until is not None) and not (args.plan or args.report):
        for dataset, (entries, out) in studies.items():
            longer = {entries[0].label: SCALE_SETTINGS[scale][dataset]["budgets"]}
            plan = (study_queue.queue_file_plan(args.queue, entries, longer) if args.queue is not None else
                    lambda dataset=dataset, entries=entries: [
                        item for seed in range(args.seeds)
                        for item in baseline_plan(dataset, entries, seed, scale) + techniques_plan(entries, seed)])
            study_queue.run_queue(plan, out, str(args.queue or f"the {dataset} plan"), until,
                                  reference=lambda entry, baseline=entries[0].label: baseline)
            report(dataset, entries, out, args.quick, args.seeds, scale)
        return 0
    if not args.report:
        # per seed: both baselines' frontiers (and plateau checks) first, then the techniques
        steps = [(seed, dataset, part) for seed in range(args.seeds) for part in ("baseline", "techniques")
                 for dataset in studies]
        for seed, dataset, part in steps:
            entries, out = studies[dataset]
            items = (baseline_plan(dataset, entries, seed, scale) if part == "baseline"
                     else techniques_plan(entries, seed))
            if args.plan:
                planned_items.setdefault(dataset, []).extend(items)
                plan_status(dataset, out, items)
                continue
            sweep.run_plan(items, out)
            report(dataset, entries, out, args.quick, args.seeds, scale)
    if args.plan and scale == "gpu-short":
        for dataset, items in planned_items.items():
            estimate_gpu_short(dataset, studies[dataset][0], items, args.quick)
    if not args.plan:
        for dataset, (entries, out) in studies.items():
            report(dataset, entries, out, args.quick, args.seeds, scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_study(main))
