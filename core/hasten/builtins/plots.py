"""PNG plots of a run's history (MLflow artifacts) and of a comparison.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend
switch), so plotting works without a display, from any thread, and does not
disturb a user's own matplotlib state.

A *history* maps a metric name to its logged ``(step, value)`` pairs in
logging order.
"""

from __future__ import annotations

import textwrap
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


def _mac_axis(axis, values: Sequence[float]) -> float:  # type: ignore[no-untyped-def]
    """Label the x axis in readable multiply-add units (GMAC, TMAC, ...) for
    ``values``; returns the divisor to plot them with."""
    from hasten.accounting import mac_scale

    scale, unit = mac_scale(max((abs(v) for v in values), default=0.0))
    axis.set_xlabel(f"cumulative multiply-adds ({unit}; fvcore, train + overhead)")
    return scale


def write_run_plots(
    history: History,
    eval_metric: str,
    out_dir: str | Path,
    *,
    title: str = "",
    schedule: History | None = None,
) -> list[Path]:
    """schedules.png, loss.png, metric_vs_flops.png, metric_vs_time.png in ``out_dir``.

    ``title`` names the run (each plot's title); ``schedule`` holds the
    hyper-parameters of *every* step (``SCHEDULE_KEYS``), drawn instead of the
    logged points where present. A plot whose data were never logged is
    skipped (e.g. no evaluation ran).
    """
    out = Path(out_dir)
    written: list[Path] = []
    prefix = f"{title}: " if title else ""

    def curve(key: str) -> list[tuple[int, float]]:
        points = dict(value_at_steps(history, key))
        points.update(value_at_steps(schedule or {}, key))  # every step where known
        return sorted(points.items())

    present = [(key, label) for key, label in SCHEDULE_KEYS if curve(key)]
    if present:
        figure, axes = _figure(len(present), 1, (6.0, 2.2 * len(present) + 0.4))
        for axis, (key, label) in zip(axes[:, 0], present):
            steps, values = zip(*curve(key))
            axis.plot(steps, values, drawstyle="steps-post" if key == "train/resolution" else "default")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        axes[0, 0].set_title(f"{prefix}schedules (every step)" if schedule else f"{prefix}schedules")
        axes[-1, 0].set_xlabel("step")
        written.append(_save(figure, out / "schedules.png"))

    if history.get("train/loss"):
        figure, axes = _figure(1, 2, (10.0, 4.0))
        steps, values = zip(*history["train/loss"])
        for axis, scale in zip(axes[0], ("linear", "log")):
            axis.plot(steps, values)
            axis.set_xlabel("step")
            axis.set_ylabel("training loss" + (" (log scale)" if scale == "log" else ""))
            if scale == "log" and min(values) > 0:
                from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

                axis.set_yscale("log")
                spread = max(values) / min(values)
                if 10 <= spread < 1000:  # a decade or two: 1, 2, 5 of each decade labelled, not one lone label
                    axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                axis.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))  # 1, 0.1, not 10^0, 10^-1
                # within one decade only minor ticks carry labels; across decades they would overlap
                axis.yaxis.set_minor_formatter(FormatStrFormatter("%.3g") if spread < 10 else NullFormatter())
            axis.grid(alpha=0.3, which="both")
        figure.suptitle(f"{prefix}training loss")
        written.append(_save(figure, out / "loss.png"))

    for cost_key, name in (("flops/total", "metric_vs_flops.png"), ("time/elapsed", "metric_vs_time.png")):
        xs, ys = metric_against(history, eval_metric, cost_key)
        if not xs:
            continue
        figure, axes = _figure()
        axis = axes[0, 0]
        if cost_key == "flops/total":
            divisor = _mac_axis(axis, xs)
            axis.plot([x / divisor for x in xs], ys, marker="o")
        else:
            axis.plot(xs, ys, marker="o")
            axis.set_xlabel("training wall time (s)")
        axis.set_ylabel(eval_metric)
        axis.set_title(f"{prefix}{eval_metric} vs {'compute' if cost_key == 'flops/total' else 'time'}")
        axis.grid(alpha=0.3)
        written.append(_save(figure, out / name))
    return written


def write_compare_plot(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    metric: str,
    target: float | None,
    path: str | Path,
    title: str = "",
) -> Path:
    """One plot of ``metric`` against cumulative multiply-adds, a line per run
    (``(label, flops, values)``), with the target as a dashed line."""
    figure, axes = _figure(size=(7.0, 4.5))
    axis = axes[0, 0]
    divisor = _mac_axis(axis, [x for _, xs, _ in curves for x in xs])
    for label, xs, ys in curves:
        axis.plot([x / divisor for x in xs], ys, marker="o", label=label)
    if target is not None:
        axis.axhline(target, linestyle="--", color="grey", label=f"target {target:.4g}")
    axis.set_ylabel(metric)
    # many runs make a long title: wrapped, not cut at the figure's edge
    axis.set_title(textwrap.fill(title or f"{metric} vs compute", 80))
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _save(figure, Path(path))
