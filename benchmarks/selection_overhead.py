"""Selection overhead: step time of training with Fast Online Minibatch Selection
against the same training without it, in one run, next to the prediction.

    python benchmarks/selection_overhead.py [--data procedural|imagenette] [--resolution 64]
        [--batch-size 64] [--steps 30] [--repeats 2] [--quick]

For r_hat / r = 0.5 and 0.75 (candidate ratio b_bar / b = 2, beta = 1) it
prints the measured step-time overhead (t_selection / t_uniform - 1) beside
the CNN prediction of docs/methods.md section 5,

    overhead ~ 1/3 (r_hat / r)^2 b_bar / b

(a forward is 1/3 of a training step and costs ~ r^2), and the FLOP overhead
the accounting reported (flops/overhead/selection / flops/train). The
measured figure also contains what the prediction leaves out: loading and
augmenting b_bar instead of b images at full resolution, the downsampling,
the ranking and the draw. Configurations run interleaved, ``--repeats`` times
each, and the best time of each is compared, so machine noise hits all alike;
the first ``--skip`` steps (caches, FLOP counting) are not timed.

``--ranking`` adds the scoring-mode comparison: how well the low-resolution
losses of each ``scoring_mode`` (eval: BatchNorm running statistics;
train_restore: batch statistics, buffers restored) rank the candidates like
the full-resolution losses do (Spearman correlation), measured on a fixed
batch at several points of a plain training run.
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

import hasten
from hasten.config import validate_config
from hasten.data.augment import eval_batch, resize_batch
from hasten.engine import train
from hasten.plugins import installed_plugins, register_plugin

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
RATIOS = (0.5, 0.75)


class StepTimer(hasten.Plugin):
    """Wall time from the start of step ``skip`` to the end of the last step (evaluation excluded)."""

    name = "step_timer"

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.skip = 2
        self.started = 0.0
        self.seconds_per_step = 0.0

    def _sync(self, state: hasten.State) -> None:
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)

    @hasten.hookimpl
    def hasten_setup(self, state: hasten.State) -> None:
        state.scratch["step_timer"] = self

    @hasten.hookimpl
    def hasten_step_start(self, state: hasten.State) -> None:
        if state.step == self.skip:
            self._sync(state)
            self.started = time.perf_counter()

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        if state.step == state.total_steps - 1:
            self._sync(state)
            self.seconds_per_step = (time.perf_counter() - self.started) / (state.total_steps - self.skip)


def make_config(args: argparse.Namespace, workdir: Path, selection: dict[str, Any] | None) -> dict[str, Any]:
    plugins: dict[str, Any] = {"step_timer": {}}
    if selection is not None:
        plugins["selection"] = selection
    if args.data == "imagenette":
        data: dict[str, Any] = {"dataset": "imagefolder", "path": str(SHARED / "imagenette2-128")}
    else:
        # Enough samples that selection (2b per step) never wraps an epoch.
        size = args.batch_size * 2 * (args.steps + 1)
        data = {"dataset": "procedural", "options": {"train_size": size, "val_size": 64}}
    data.update({"resolution": args.resolution, "batch_size": args.batch_size, "num_workers": args.workers})
    return {
        "run": {"name": "selection-overhead", "max_steps": args.steps, "log_every": 10**6, "progress": False,
                "run_dir": str(workdir / f"run-{time.monotonic_ns()}"), "device": args.device},
        "data": data,
        "model": {"name": args.model},
        "optim": {"lr": 0.1, "nesterov": True},
        "eval": {"every_steps": 10**6, "batch_size": 64, "max_batches": 1},
        "tracking": {"enabled": False},
        "plugins": plugins,
    }


def timed_run(args: argparse.Namespace, workdir: Path, selection: dict[str, Any] | None) -> tuple[float, float]:
    """(seconds per step, selection FLOPs / training FLOPs) of one run."""
    result = train(validate_config(make_config(args, workdir, selection)))
    assert result.state is not None
    flops = result.state.flops
    return result.state.scratch["step_timer"].seconds_per_step, flops.overhead.get("selection", 0.0) / flops.train


def overhead_table(args: argparse.Namespace, workdir: Path) -> None:
    variants: dict[str, dict[str, Any] | None] = {"uniform": None}
    for ratio in RATIOS:
        variants[f"r_hat/r={ratio}"] = {"selection_ratio": ratio, "candidate_ratio": 2.0, "beta": 1.0}
    best: dict[str, float] = {name: float("inf") for name in variants}
    flop_ratio: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, selection in variants.items():
            seconds, flop_ratio[name] = timed_run(args, workdir, selection)
            best[name] = min(best[name], seconds)
    base = best["uniform"]
    print(f"uniform (no selection): {1000 * base:.1f} ms/step, batch {args.batch_size}, {args.resolution} px")
    print(f"{'r_hat/r':>8} {'ms/step':>9} {'measured':>9} {'predicted':>10} {'FLOPs':>7}")
    for ratio in RATIOS:
        name = f"r_hat/r={ratio}"
        predicted = (ratio**2) * 2.0 / 3.0
        print(
            f"{ratio:>8} {1000 * best[name]:>9.1f} {best[name] / base - 1:>9.1%} {predicted:>10.1%} "
            f"{flop_ratio[name]:>7.1%}"
        )
    print("measured = step time / uniform step time - 1; predicted = 1/3 (r_hat/r)^2 b_bar/b; "
          "FLOPs = selection forward / training FLOPs (fvcore)")


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks_a = a.argsort().argsort().double()
    ranks_b = b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ranks_a, ranks_b]))[0, 1])


class RankProbeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: list[int] = Field(default_factory=list, description="0-based steps after which to measure")
    candidates: int = Field(128, gt=0, description="scoring batch size b_bar")
    ratio: float = Field(0.5, gt=0, le=1, description="r_hat / r")


class RankProbe(hasten.Plugin):
    """At given steps, scores a fixed candidate set in both modes on a copy of the model."""

    name = "rank_probe"
    Settings = RankProbeSettings

    def __init__(self, settings: RankProbeSettings) -> None:
        super().__init__(settings)
        self.at = set(settings.at)
        self.ratio = settings.ratio
        self.candidates = settings.candidates
        self.rows: list[tuple[int, float, float, float, float]] = []

    @hasten.hookimpl
    def hasten_setup(self, state: hasten.State) -> None:
        state.scratch["rank_probe"] = self
        item = state.data.train.__getitems__(list(range(self.candidates * 4)))
        self.images = eval_batch(item[0].to(state.device), state.max_resolution, state.task.info.mean,
                                 state.task.info.std)
        self.labels = torch.as_tensor(item[1]).to(state.device)

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        if state.step not in self.at:
            return
        model = copy.deepcopy(state.model)  # the run's buffers stay untouched
        low_size = max(8, round(self.ratio * state.resolution))
        losses: dict[tuple[str, str], list[torch.Tensor]] = {}
        with torch.no_grad():
            for chunk in range(0, len(self.labels), self.candidates):  # one scoring batch of b_bar at a time
                full = self.images[chunk : chunk + self.candidates]
                labels = self.labels[chunk : chunk + self.candidates]
                low = resize_batch(full, low_size)
                for mode in ("eval", "train"):
                    model.train(mode == "train")
                    snapshot = copy.deepcopy(model.state_dict())
                    for size, x in (("low", low), ("full", full)):
                        loss = F.cross_entropy(model(x), labels, reduction="none")
                        losses.setdefault((mode, size), []).append(loss)
                        model.load_state_dict(snapshot)
        cat = {k: torch.cat(v) for k, v in losses.items()}
        self.rows.append((
            state.step + 1,
            spearman(cat[("eval", "low")], cat[("eval", "full")]),
            spearman(cat[("eval", "low")], cat[("train", "full")]),
            spearman(cat[("train", "low")], cat[("eval", "full")]),
            spearman(cat[("train", "low")], cat[("train", "full")]),
        ))


def ranking_table(args: argparse.Namespace, workdir: Path) -> None:
    config = make_config(args, workdir, None)
    config["run"]["max_steps"] = args.ranking_steps
    config["schedule"] = {"name": "cosine"}
    steps = args.ranking_steps
    # Probe at the start, a quarter, half-way and the end of a plain run.
    probe = {"at": sorted({0, steps // 4, steps // 2, steps - 1}), "candidates": 2 * args.batch_size, "ratio": 0.5}
    config["plugins"] = {"rank_probe": probe}
    if args.data == "procedural":
        config["data"]["options"]["train_size"] = max(2048, args.batch_size * 8)
    register_plugin(RankProbe)
    result = train(validate_config(config))
    assert result.state is not None
    rows = result.state.scratch["rank_probe"].rows
    print(f"\nscoring-mode ranking at r_hat/r = 0.5 (Spearman of low-res vs full-res per-sample losses, "
          f"{4 * 2 * args.batch_size} fixed samples, in scoring batches of {2 * args.batch_size}):")
    print(f"{'step':>6} {'eval~eval':>10} {'eval~train':>11} {'train~eval':>11} {'train~train':>12}")
    for step, *values in rows:
        print(f"{step:>6} " + " ".join(f"{v:>{w}.3f}" for v, w in zip(values, (10, 11, 11, 12), strict=True)))
    print("columns: scoring mode ~ reference mode (the full-resolution loss in eval mode, or in train mode "
          "with batch statistics as the training step computes it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("procedural", "imagenette"), default="procedural")
    parser.add_argument("--model", default="small_resnet")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ranking", action="store_true", help="also compare the scoring modes' rankings")
    parser.add_argument("--ranking-steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a tiny size that only checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.resolution, args.batch_size, args.steps, args.repeats, args.ranking_steps = 32, 16, 4, 1, 8
    if args.data == "imagenette" and not (SHARED / "imagenette2-128").is_dir():
        raise SystemExit(f"--data imagenette: {SHARED / 'imagenette2-128'} not found")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from common import ensure_plugins  # plugins/selection usable without installing it

    ensure_plugins(["selection"])
    info = installed_plugins().get("selection")
    if info is None or info.plugin_class is None:
        from hasten_selection.plugin import Selection

        register_plugin(Selection)
    register_plugin(StepTimer)
    from common import code_block, tee, write_section  # benchmarks/common.py: the RESULTS.md writer

    with tee() as report, tempfile.TemporaryDirectory() as tmp:
        print(f"selection overhead on {platform.node()} ({args.device}), torch {torch.__version__}, "
              f"{args.model}, data {args.data}")
        workdir = Path(tmp)
        overhead_table(args, workdir)
        if args.ranking:
            ranking_table(args, workdir)
    write_section("selection_overhead", "Selection overhead", code_block(report.text), quick=args.quick)


if __name__ == "__main__":
    main()
