"""The UBN spiral study (docs/methods.md section 1, the research's Fig. 2.2-2.5 and Table 2.1).

Trains the 5-layer MLP of examples/ubn_spiral.yaml twice, with BN (no plugin)
and with UBN, then writes one figure: both decision boundaries with the
labeled (filled) and unlabeled (hollow) points, and the Monte-Carlo BN
uncertainty maps (std of p(class 1) over BN statistics from 30 batches of
[labeled; 100 random unlabeled points]). Prints the held-out accuracies and
Table 2.1 for both models.

    python plugins/ubn/scripts/spiral_study.py [--seed 0] [--out plugins/ubn/docs/spiral.png]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import torch

import hasten
from hasten.config import read_file, validate_config
from hasten.registry import REGISTRY

REPO = Path(__file__).resolve().parents[3]


def train_pair(base: dict[str, Any], seed: int, run_root: Path) -> dict[str, hasten.RunResult]:
    """The BN run (plugins removed) and the UBN run of the same config and seed."""
    results = {}
    for label in ("BN", "UBN"):
        raw = copy.deepcopy(base)
        raw["run"].update(seed=seed, run_dir=str(run_root / f"{label}-{seed}"), progress=False, checkpoint_every=None)
        raw.setdefault("tracking", {})["enabled"] = False
        raw.setdefault("eval", {})["every_steps"] = 10**6
        if label == "BN":
            raw.pop("plugins", None)
        results[label] = hasten.train(validate_config(raw))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "ubn_spiral.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "plugins" / "ubn" / "docs" / "spiral.png"))
    parser.add_argument("--runs", default="runs/spiral-study", help="where the two runs are written")
    parser.add_argument("--mc-batches", type=int, default=30)
    parser.add_argument("--grid", type=int, default=200, help="grid points per axis of the maps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hasten_ubn.diagnostics import feature_distances, format_table, mc_bn_predict

    base = read_file(args.config)
    results = train_pair(base, args.seed, Path(args.runs))
    options = base["data"].get("options", {})
    build = REGISTRY.datasets.get("spiral")
    labeled = build(split="train", resolution=0, seed=args.seed, **options)
    unlabeled = build(split="unlabeled", resolution=0, seed=args.seed, **options)
    xl, yl = labeled.images, labeled.labels
    xu, yu = unlabeled.images, unlabeled.hidden_labels

    extent = 1.25
    axis = torch.linspace(-extent, extent, args.grid)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    generator = torch.Generator().manual_seed(args.seed)
    stats_batches = [
        torch.cat([xl, xu[torch.randperm(len(xu), generator=generator)[:100]]]) for _ in range(args.mc_batches)
    ]

    fig, axes = plt.subplots(2, 2, figsize=(10, 10))
    for column, (label, result) in enumerate(results.items()):
        assert result.state is not None
        model = result.state.model.eval()
        with torch.no_grad():
            p1 = torch.softmax(model(grid), dim=1)[:, 1].reshape(args.grid, args.grid)
        _, spread = mc_bn_predict(model, grid, stats_batches)
        uncertainty = spread[:, 1].reshape(args.grid, args.grid)
        acc = result.metrics["val/acc1"]
        print(f"{label}: held-out accuracy {acc:.3f}")
        print(format_table(feature_distances(model, [xl], [xu])))
        top, bottom = axes[0, column], axes[1, column]
        top.contourf(gx, gy, p1, levels=20, cmap="coolwarm", vmin=0, vmax=1, alpha=0.8)
        top.contour(gx, gy, p1, levels=[0.5], colors="k", linewidths=1.2)
        top.set_title(f"{label}: decision boundary (held-out acc {acc:.1%})")
        image = bottom.contourf(gx, gy, uncertainty, levels=20, cmap="viridis")
        fig.colorbar(image, ax=bottom, fraction=0.046)
        bottom.set_title(f"{label}: Monte-Carlo BN std of p(class 1)")
        for ax in (top, bottom):
            for cls, colour in ((0, "tab:blue"), (1, "tab:red")):
                ax.scatter(*xu[yu == cls].T, s=12, facecolors="none", edgecolors=colour, linewidths=0.8)
                ax.scatter(*xl[yl == cls].T, s=40, c=colour, edgecolors="k", linewidths=0.8)
            ax.set_xlim(-extent, extent)
            ax.set_ylim(-extent, extent)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Spiral, 25 labeled (filled) + 200 unlabeled (hollow) points per class, 5-layer MLP")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
