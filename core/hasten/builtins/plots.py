"""PNG plots of a run's history (MLflow artifacts) and of a comparison.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
switch), so plotting works without a display, from any thread, and does not
disturb a user's own matplotlib state.

A *history* maps a metric name to its logged ``(step, value)`` pairs in
logging order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

History = Mapping[str, Sequence[tuple[int, float]]]

#: the hyper-parameter curves drawn in schedules.png (metric key, axis label)
SCHEDULE_KEYS = (
    ("train/lr", "learning rate"),
    ("train/momentum", "momentum"),
    ("train/resolution", "resolution (px)"),
    ("train/aug_magnitude", "augmentation magnitude"),
)


def _figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (6.0, 4.0)):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, axes


def _save(figure, path: Path) -> Path:  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def value_at_steps(history: History, key: str) -> dict[int, float]:
    """``step -> value`` of ``key`` (the last value logged at each step)."""
    return {int(step): float(value) for step, value in history.get(key, ())}


def metric_against(history: History, metric: str, cost_key: str) -> tuple[list[float], list[float]]:
    """Pairs (cost, metric value) at every step where ``metric`` was logged and
    ``cost_key`` is known at that step."""
    costs = value_at_steps(history, cost_key)
    xs, ys = [], []
    for step, value in history.get(metric, ()):
        if int(step) in costs:
            xs.append(costs[int(step)])
            ys.append(float(value))
    return xs, ys


def write_run_plots(history: History, eval_metric: str, out_dir: str | Path) -> list[Path]:
    """schedules.png, loss.png, metric_vs_flops.png, metric_vs_time.png in ``out_dir``.

    A plot whose data were never logged is skipped (e.g. no evaluation ran).
    """
    out = Path(out_dir)
    written: list[Path] = []

    present = [(key, label) for key, label in SCHEDULE_KEYS if history.get(key)]
    if present:
        figure, axes = _figure(len(present), 1, (6.0, 2.2 * len(present)))
        for axis, (key, label) in zip(axes[:, 0], present):
            steps, values = zip(*history[key])
            axis.plot(steps, values)
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        written.append(_save(figure, out / "schedules.png"))

    if history.get("train/loss"):
        figure, axes = _figure()
        steps, values = zip(*history["train/loss"])
        axes[0, 0].plot(steps, values)
        axes[0, 0].set_xlabel("step")
        axes[0, 0].set_ylabel("training loss")
        axes[0, 0].grid(alpha=0.3)
        written.append(_save(figure, out / "loss.png"))

    for cost_key, label, name in (
        ("flops/total", "cumulative FLOPs (fvcore, train + overhead)", "metric_vs_flops.png"),
        ("time/elapsed", "wall time (s)", "metric_vs_time.png"),
    ):
        xs, ys = metric_against(history, eval_metric, cost_key)
        if not xs:
            continue
        figure, axes = _figure()
        axes[0, 0].plot(xs, ys, marker="o")
        axes[0, 0].set_xlabel(label)
        axes[0, 0].set_ylabel(eval_metric)
        axes[0, 0].grid(alpha=0.3)
        written.append(_save(figure, out / name))
    return written


def write_compare_plot(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    metric: str,
    target: float | None,
    path: str | Path,
) -> Path:
    """One plot of ``metric`` against cumulative FLOPs, a line per run
    (``(label, flops, values)``), with the target as a dashed line."""
    figure, axes = _figure(size=(7.0, 4.5))
    axis = axes[0, 0]
    for label, xs, ys in curves:
        axis.plot(xs, ys, marker="o", label=label)
    if target is not None:
        axis.axhline(target, linestyle="--", color="grey", label=f"target {target:.4g}")
    axis.set_xlabel("cumulative FLOPs (fvcore, train + overhead)")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _save(figure, Path(path))
