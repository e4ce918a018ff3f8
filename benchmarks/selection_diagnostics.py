"""Why selection does or does not pay off: its diagnostics over training, from the frontier study's runs.

    python benchmarks/selection_diagnostics.py [--dataset imagenette|fashion_mnist|all]

Reads the finished run folders of benchmarks/frontier.py
(``benchmarks/results/frontier/<dataset>/runs/*/metrics.jsonl``,
not committed) and keeps, for every run that logged hasten-selection's diagnostics, ten points of its
training (at 10%, 20%, ... of its steps): the training loss, the candidates' scored-loss quantiles
(q10/q50/q90), the share of candidates scored below 0.05 (``near_zero_share``: the samples selection
could skip without losing anything), and the mean loss of the selected samples over that of the
candidates (how much harder the trained batch is than a uniform one). The compact trajectories are
written to ``benchmarks/results/frontier/<dataset>/diagnostics/<run>.json`` (committed, so the table
survives the run folders) and as a table to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, write_section

POINTS = 10  # trajectory points per run
KEYS = (
    "train/loss",
    "selection/candidate_loss_q10",
    "selection/candidate_loss_q50",
    "selection/candidate_loss_q90",
    "selection/near_zero_share",
    "selection/candidate_loss_mean",
    "selection/selected_loss_mean",
    "selection/scored_share",
    "selection/memory_fresh_share",
)


def trajectory(metrics_file: Path) -> dict[str, Any] | None:
    """Ten evenly spaced points of a run's selection diagnostics (None: the run logged none)."""
    every = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in every if row["metrics"].get("selection/active") == 1.0]
    if not rows:
        return None
    config = metrics_file.parent / "config.yaml"  # the run record's resolved config: the run's length
    if not config.is_file():
        print(f"skipped {metrics_file.parent}: no config.yaml (its length is unknown)", file=sys.stderr)
        return None
    import yaml

    total = int(yaml.safe_load(config.read_text(encoding="utf-8"))["run"]["max_steps"])
    last = every[-1]["step"] + 1  # the last logged step (cool-down's tail logs no selection diagnostics)
    points = []
    for k in range(1, POINTS + 1):
        target = k * total / POINTS - 1
        row = min(rows, key=lambda r: abs(r["step"] - target))
        if abs(row["step"] - target) > total / (2 * POINTS):
            continue  # no selection step near this point (e.g. cool-down's uniform tail, an unfinished run)
        values = {key: row["metrics"][key] for key in KEYS if key in row["metrics"]}
        points.append({"step": row["step"], "fraction": round((row["step"] + 1) / total, 3), **values})
    return {"run": metrics_file.parent.name, "steps": total, "finished": last >= total, "points": points}


def table(records: list[dict[str, Any]]) -> str:
    lines = []
    for record in records:
        lines.append(f"**{record['run']}** ({record['steps']} steps)\n")
        lines.append("| share of training | train loss | scored loss q10 / q50 / q90 | near-zero share | "
                     "selected / candidate mean loss | scored share |")
        lines.append("|---|---|---|---|---|---|")
        for p in record["points"]:
            ratio = (p["selection/selected_loss_mean"] / p["selection/candidate_loss_mean"]
                     if p.get("selection/candidate_loss_mean") else float("nan"))
            near = p.get("selection/near_zero_share")
            lines.append(
                f"| {p['fraction']:.1f} | {p.get('train/loss', float('nan')):.3f} | "
                f"{p['selection/candidate_loss_q10']:.3f} / {p['selection/candidate_loss_q50']:.3f} / "
                f"{p['selection/candidate_loss_q90']:.3f} | "
                f"{'n/a' if near is None else f'{near:.3f}'} | {ratio:.2f} | "
                f"{p.get('selection/scored_share', 1.0):.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("imagenette", "fashion_mnist", "all"), default="all")
    parser.add_argument("--root", type=Path, default=RESULTS_DIR / "frontier",
                        help="the frontier study's folder (default: benchmarks/results/frontier)")
    args = parser.parse_args()
    datasets = ("imagenette", "fashion_mnist") if args.dataset == "all" else (args.dataset,)
    for dataset in datasets:
        runs, out = args.root / dataset / "runs", RESULTS_DIR / "frontier" / dataset / "diagnostics"
        for metrics_file in sorted(runs.glob("*/metrics.jsonl")) if runs.is_dir() else []:
            record = trajectory(metrics_file)
            if record is not None and not record["finished"]:
                # a run stopped between sessions (it is trained again from the start): not a trajectory
                print(f"left out {metrics_file.parent.name}: unfinished", file=sys.stderr)
                continue
            if record is not None and record["points"]:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{record['run']}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        files = sorted(out.glob("*.json")) if out.is_dir() else []
        records = [r for r in (json.loads(p.read_text(encoding="utf-8")) for p in files) if r["finished"]]
        if not records:
            print(f"{dataset}: no run with selection diagnostics under {runs}", file=sys.stderr)
            continue
        body = "\n".join([
            "- near-zero share: candidates whose scored loss (at the selection resolution) is below 0.05",
            "",
            table(records),
        ])
        write_section(f"selection_diagnostics/{dataset}", f"Selection diagnostics over training: {dataset}", body,
                      command="python benchmarks/selection_diagnostics.py (reads the frontier study's run folders)")
        print(f"{dataset}: {len(records)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
