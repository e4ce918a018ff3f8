"""Why two_step collapses on depth with Adam (issue 17): conv weight norms and update sizes during training.

    python benchmarks/ubn_weight_norms.py            (trains the probe runs not done yet, then writes the section)
    python benchmarks/ubn_weight_norms.py --report   (the section from the stored JSON only)

The hypothesis (RESULTS.md, "UBN with few labels and long training: depth"): two_step uses the combined batch's
statistics as constants in the labeled forward, so the gradient loses the projection that BatchNorm's statistics
gradient applies (with it the gradient of a conv weight feeding BN is orthogonal to that weight, and the weight's
norm only grows slowly). Without it the gradient has a radial part; under Adam, whose per-weight steps do not shrink
as a weight grows, the norms may drift (grow: the layer's effective learning rate falls, it freezes; shrink: the
relative step grows, it becomes noisy). The probe measures it instead of assuming it: the study's own depth configs
at 5% labels, seed 0 (benchmarks/results/ubn_long/depth/configs/), trained again with a checkpoint every 1/10 of the
run, and per checkpoint the Frobenius norm of every conv weight that feeds a BatchNorm and its relative change since
the previous checkpoint. The final val/delta1 is checked against the study's record of the same recipe and seed.

Runs are trained by `hasten sweep`'s run_one (its run folder, resume check, MLflow run) in
benchmarks/results/ubn_long/depth/probe_runs/ (not committed); the per-run norms go to
benchmarks/results/ubn_long/depth/weight_norms/<run>.json (committed; a rerun skips a run that has one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import RESULTS_DIR, ensure_plugins, run_study, write_section

from hasten.builtins.record import read_metrics
from hasten.checkpoint import checkpoint_steps, load_checkpoint
from hasten.commands import sweep
from hasten.config import load_config

STUDY = RESULTS_DIR / "ubn_long" / "depth"
OUT = STUDY / "weight_norms"
RUNS = STUDY / "probe_runs"
#: (config file of the study, label of its records, overrides, name suffix); SGD two_step for contrast (the same mode
#: without Adam); two_step with AdamW weight decay: if the norm growth caused the collapse, decay that holds the norms
#: would mend it (0.05 decays lr x wd = 1e-5 a step, ~1% over the run; 2.0 about 25%, the size of the growth)
PROBES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("adam_5_BN", "adam 5% BN", (), ""), ("adam_5_UBN_two_step", "adam 5% UBN two_step", (), ""),
    ("adam_5_UBN_two_step_grad", "adam 5% UBN two_step_grad", (), ""),
    ("sgd_5_UBN_two_step", "sgd 5% UBN two_step", (), ""),
    ("adam_5_UBN_two_step", "adam 5% UBN two_step", ("optim.weight_decay=0.05",), "-wd0.05"),
    ("adam_5_UBN_two_step", "adam 5% UBN two_step", ("optim.weight_decay=2.0",), "-wd2"))
SEED = 0
SNAPSHOTS = 10


def bn_fed_convs(weights: dict[str, torch.Tensor]) -> list[str]:
    """Names of the conv weights whose output a BatchNorm normalises: in a state dict's (module) order, each 4-D
    weight followed by a BatchNorm's running_mean before the next conv."""
    names, pending = [], None
    for name, tensor in weights.items():
        if name.endswith(".weight") and tensor.dim() == 4:
            pending = name
        elif name.endswith(".running_mean") and pending is not None:
            names.append(pending)
            pending = None
    return names


def final_train_loss(run_dir: Path, logs: int = 5) -> float:
    """Mean train/loss of the run's last ``logs`` logged steps (metrics.jsonl): does the mode fit the labeled set?"""
    losses = [row["metrics"]["train/loss"] for row in read_metrics(run_dir) if "train/loss" in row["metrics"]]
    return statistics.fmean(losses[-logs:])


def probe(config_name: str, label: str, overrides: tuple[str, ...], threads: int) -> dict[str, Any]:
    """Train one probe with `hasten sweep`'s run_one (its run folder, resume check, MLflow run) and read its norms."""
    config = load_config(STUDY / "configs" / f"{config_name}.yaml")
    steps = config.run.max_steps or 0
    every = [f"run.checkpoint_every={steps // SNAPSHOTS}", f"run.keep_checkpoints={SNAPSHOTS + 1}",
             f"run.threads={threads}", f"tracking.uri=sqlite:///{RUNS / 'mlflow.db'}"]
    (entry,) = sweep.prepare([str(STUDY / "configs" / f"{config_name}.yaml")], [*overrides, *every], [1.0], 1,
                             [label + "".join(f", {o}" for o in overrides)])
    result = sweep.run_one(entry, 1.0, SEED, RUNS)
    run_dir = sweep.run_dir_path(RUNS, entry.label, entry.config_hash, 1.0, SEED)
    snapshots = [load_checkpoint(run_dir / "checkpoints" / f"step-{step:09d}.pt")["model"]
                 for step in checkpoint_steps(run_dir)]
    convs = bn_fed_convs(snapshots[0])
    rows: list[dict[str, Any]] = []
    previous: dict[str, torch.Tensor] | None = None
    for step, weights in zip(checkpoint_steps(run_dir), snapshots, strict=True):
        norms = {n: float(weights[n].norm()) for n in convs}
        change: dict[str, float] | None = None
        if previous is not None:
            change = {n: float((weights[n] - previous[n]).norm() / previous[n].norm()) for n in convs}
        rows.append({"step": step, "norm": norms, "relative_change": change})
        previous = {n: weights[n].clone() for n in convs}
    records = [r for r in sweep.read_records(STUDY)
               if r.label == label and r.seed == SEED and r.budget == 1.0 and not overrides]
    return {"label": entry.label, "seed": SEED, "overrides": list(overrides),
            "train_loss_end": final_train_loss(run_dir), "steps": steps, "convs": convs, "snapshots": rows,
            "val/delta1": result.value,
            "study_record_value": records[0].value if records else None, "code_commit": sweep.code_commit()}


def report() -> None:
    found = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(OUT.glob("*.json"))}
    if not found:
        print("no probe results yet")
        return
    lines = ["| run | val/delta1 (study record) | train loss, last 5 logs | median conv norm at 1/10 -> 1/2 -> end "
             "(growth) | "
             "deepest conv norm 1/10 -> end | median relative change per 1/10 of the run: second, middle, last |",
             "|---|---|---|---|---|---|"]
    for data in found.values():
        snaps = data["snapshots"]
        med = [statistics.median(s["norm"].values()) for s in snaps]
        deep = data["convs"][-1]
        changes = [statistics.median(s["relative_change"].values()) for s in snaps if s["relative_change"]]
        mid = len(med) // 2
        record = data["study_record_value"]
        lines.append(f"| {data['label']} | {data['val/delta1']:.4f} ({'-' if record is None else f'{record:.4f}'}) | "
                     f"{data['train_loss_end']:.3f} | {med[0]:.2f} -> {med[mid]:.2f} -> {med[-1]:.2f} "
                     f"({med[-1] / med[0]:.2f}x) | "
                     f"{snaps[0]['norm'][deep]:.2f} -> {snaps[-1]['norm'][deep]:.2f} | "
                     f"{changes[0]:.3f}, {changes[len(changes) // 2]:.3f}, {changes[-1]:.3f} |")
    body = "\n".join([
        f"Probe: the study's depth configs at 5% labels, seed {SEED}, a checkpoint every 1/{SNAPSHOTS} of the run; "
        "norms of the conv weights that feed a BatchNorm (Frobenius), relative change = ||W_t - W_(t-1/10)|| / "
        f"||W_(t-1/10)||. Per-run JSON: `{OUT.relative_to(RESULTS_DIR.parent.parent)}`.",
        "",
        "\n".join(lines)])
    write_section("ubn_long/depth/weight_norms", "UBN two_step with Adam on depth: conv weight norms", body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="write the section from the stored JSON only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not args.report:
        ensure_plugins(("ubn",))
        for config_name, label, overrides, suffix in PROBES:
            name = f"{config_name}{suffix}-s{SEED}"
            target = OUT / f"{name}.json"
            if target.is_file():
                continue
            sweep.write_json(target, probe(config_name, label, overrides, args.threads))
            print(f"{label}: written {target}", flush=True)
    report()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_study(main))
