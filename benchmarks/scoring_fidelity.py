"""How faithful is selection's cheap score? Per-sample losses at the scoring resolution vs at the training one.

    python benchmarks/scoring_fidelity.py [--dataset fashion_mnist|imagenette|all] [--budget 0.25]

Fast Online Minibatch Selection ranks candidates by their loss at a low
resolution r_hat (docs/methods.md, section 5) so that scoring is cheap. The
ranking is only worth its FLOPs if it orders samples as the training loss
does. This trains the frontier study's uniform baseline (benchmarks/frontier.py,
same config) for ``--budget`` of its length, then scores 2048 augmented
training views of that model several ways and compares each with the loss the
training step itself sees (full resolution, BatchNorm in train mode with the
batch's statistics):

* Spearman rank correlation with the training loss;
* overlap of the top halves (the samples a greedy 2x selection would keep);
* the median loss and the share under 0.05 (``near_zero_share``).

Ways: full resolution in eval mode (running statistics); r_hat in eval mode
(hasten-selection's default ``scoring_mode: eval``); r_hat in train mode
(``scoring_mode: train_restore``: batch statistics at r_hat); and intermediate
resolutions. One seed; a few minutes per dataset on one core.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import write_section
from frontier import SCALES, recipes
from scipy.stats import spearmanr

from hasten.api import BufferSnapshot, model_unchanged, resize_batch
from hasten.batch import Batch
from hasten.commands import sweep
from hasten.config import validate_config
from hasten.data.stream import IndexedDataset, to_batch
from hasten.engine import Trainer

SAMPLES = 2048
BATCH = 256  # scoring batch (BatchNorm batch statistics in train mode: the size selection scores at, 2x 128)


def trained_baseline(dataset: str, budget: float, workdir: Path, threads: int) -> Trainer:
    found = recipes(dataset, quick=False, threads=threads)
    if found is None:
        raise SystemExit(0)  # recipes() printed why the data is absent
    configs, _ = found
    raw: dict[str, Any] = copy.deepcopy(configs["uniform"])
    raw["run"].update({"run_dir": str(workdir / "run"), "seed": 0})
    raw["tracking"] = {"enabled": False}
    config = sweep.with_budget(validate_config(raw), budget)
    trainer = Trainer(config)
    trainer.fit()
    return trainer


def views(trainer: Trainer) -> list[Batch]:
    """SAMPLES augmented training views (the training step's own augmentation), in scoring batches."""
    state = trainer.state
    torch.manual_seed(1)
    order = torch.randperm(len(state.data.train))[:SAMPLES]
    out = []
    for start in range(0, SAMPLES, BATCH):
        idx = order[start:start + BATCH].tolist()
        batch = to_batch(IndexedDataset(state.data.train).__getitems__(idx))
        batch.views = state.task.views(state, batch)
        out.append(batch)
    return out


def losses(trainer: Trainer, batches: list[Batch], resolution: int | None, train_mode: bool) -> torch.Tensor:
    state = trainer.state
    model = state.model
    snapshot = BufferSnapshot(model)
    parts = []
    for batch in batches:
        view = batch.views[0] if resolution is None else resize_batch(batch.views[0], resolution)
        with model_unchanged(model, train=train_mode, buffers=snapshot if train_mode else None) as m:
            parts.append(state.task.sample_losses(m, view, batch).float())
    return torch.cat(parts)


def top_half_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    k = len(a) // 2
    top_a = set(a.topk(k).indices.tolist())
    top_b = set(b.topk(k).indices.tolist())
    return len(top_a & top_b) / k


def measure(dataset: str, budget: float, threads: int) -> str:
    scale = SCALES[dataset]
    r_train, r_hat = scale["resolution"], scale["selection_resolution"]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trained_baseline(dataset, budget, Path(tmp), threads)
        result_acc = trainer.state.metrics.get("val/acc1", float("nan"))
        batches = views(trainer)
        reference = losses(trainer, batches, None, train_mode=True)
        ways: list[tuple[str, int | None, bool]] = [
            (f"{r_train} px, train mode (the training step's loss: reference)", None, True),
            (f"{r_train} px, eval mode", None, False),
        ]
        for r in sorted({r_hat, (r_hat + r_train) // 2, r_train - 4} - {r_train}):
            ways.append((f"{r} px, eval mode" + (" (selection's default)" if r == r_hat else ""), r, False))
            ways.append((f"{r} px, train mode (scoring_mode: train_restore)", r, True))
        rows = ["| scored as | Spearman with training loss | top-half overlap | median loss | near-zero share |",
                "|---|---|---|---|---|"]
        for label, resolution, train_mode in ways:
            scored = reference if resolution is None and train_mode else losses(trainer, batches, resolution,
                                                                               train_mode)
            rho = float(spearmanr(scored.numpy(), reference.numpy()).statistic)
            rows.append(f"| {label} | {rho:.3f} | {top_half_overlap(scored, reference):.3f} | "
                        f"{scored.median():.3f} | {(scored < 0.05).float().mean():.3f} |")
        steps = trainer.state.total_steps
    head = (f"Model: the frontier study's uniform baseline at budget {budget:g} ({steps} steps, seed 0), "
            f"val/acc1 {result_acc:.4f}; {SAMPLES} augmented training views scored in batches of {BATCH}. "
            "A random ranking has Spearman 0 and top-half overlap 0.5.")
    return head + "\n\n" + "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("imagenette", "fashion_mnist", "all"), default="all")
    parser.add_argument("--budget", type=float, default=0.25, help="share of the study's baseline length to train")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for dataset in ("fashion_mnist", "imagenette") if args.dataset == "all" else (args.dataset,):
        body = measure(dataset, args.budget, args.threads)
        print(body)
        write_section(f"scoring_fidelity/{dataset}", f"Selection's score vs the training loss: {dataset}", body,
                      command=f"python benchmarks/scoring_fidelity.py --dataset {dataset} --budget {args.budget:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
