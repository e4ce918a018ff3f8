"""The run and compare plots: titles name the run, compute axes in multiply-adds with readable units,
schedules drawn from every step, the loss also on a log axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hasten.builtins import plots


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every figure the plots module saves, by file name (saved as usual)."""
    saved: dict[str, Any] = {}
    original = plots._save

    def keep(figure: Any, path: Path) -> Path:
        saved[path.name] = figure
        return original(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_run_plots_titles_units_every_step_schedule_and_log_loss(tmp_path: Path, figures: dict[str, Any]) -> None:
    # logged every 4th step; the schedule is known at every step (a cosine-like ramp down)
    logged = range(0, 20, 4)
    history = {
        "train/lr": [(s, 0.1 - 0.005 * s) for s in logged],
        "train/loss": [(s, 2.0 / (1 + s)) for s in logged],  # 2.0 ... 0.12: more than a decade
        "val/acc1": [(s, 0.1 + 0.04 * s) for s in logged],
        "flops/total": [(s, 3e9 * (s + 1)) for s in logged],  # 3 GMAC ... 51 GMAC
        "time/elapsed": [(s, 0.5 * s) for s in logged],
    }
    schedule = {"train/lr": [(s, 0.1 - 0.005 * s) for s in range(20)]}
    written = plots.write_run_plots(history, "val/acc1", tmp_path, title="tiny (exp)", schedule=schedule)
    assert {p.name for p in written} == {"schedules.png", "loss.png", "metric_vs_flops.png", "metric_vs_time.png"}
    assert all(p.stat().st_size > 5000 for p in written)

    lr_axis = figures["schedules.png"].axes[0]
    assert lr_axis.get_title() == "tiny (exp): schedules (every step)"
    steps = list(lr_axis.lines[0].get_xdata())
    assert steps == list(range(20))  # every step, not only the 5 logged ones

    linear, log = figures["loss.png"].axes
    assert (linear.get_yscale(), log.get_yscale()) == ("linear", "log")
    low, high = log.get_ylim()
    # more than a decade: 1, 2 and 5 of each decade are labelled (not a lone "1")
    assert [t for t in log.get_yticks() if low <= t <= high] == pytest.approx([0.2, 0.5, 1.0, 2.0])
    assert figures["loss.png"]._suptitle.get_text() == "tiny (exp): training loss"

    compute = figures["metric_vs_flops.png"].axes[0]
    assert compute.get_xlabel().startswith("cumulative multiply-adds (GMAC")
    assert list(compute.lines[0].get_xdata()) == pytest.approx([3, 15, 27, 39, 51])  # in GMAC
    assert compute.get_title() == "tiny (exp): val/acc1 vs compute"
    assert figures["metric_vs_time.png"].axes[0].get_title() == "tiny (exp): val/acc1 vs time"


def test_a_loss_that_is_not_positive_keeps_a_linear_second_panel(tmp_path: Path, figures: dict[str, Any]) -> None:
    plots.write_run_plots({"train/loss": [(0, 1.0), (1, 0.0)]}, "val/acc1", tmp_path)
    assert [a.get_yscale() for a in figures["loss.png"].axes] == ["linear", "linear"]


def test_compare_plot_in_tera_multiply_adds_with_a_title(tmp_path: Path, figures: dict[str, Any]) -> None:
    curves = [("base (1234abcd)", [1e12, 4e12], [0.2, 0.5]), ("fast (5678ef01)", [5e11, 2e12], [0.3, 0.5])]
    plots.write_compare_plot(curves, "val/acc1", 0.5, tmp_path / "c.png", title="val/acc1: base vs fast")
    axis = figures["c.png"].axes[0]
    assert axis.get_xlabel().startswith("cumulative multiply-adds (TMAC")
    assert list(axis.lines[0].get_xdata()) == pytest.approx([1, 4])
    assert axis.get_title() == "val/acc1: base vs fast"
    many = " vs ".join(f"run-{i} (0123abcd)" for i in range(6))
    plots.write_compare_plot(curves, "val/acc1", 0.5, tmp_path / "many.png", title=many)
    lines = figures["many.png"].axes[0].get_title().split("\n")
    assert len(lines) == 2 and " ".join(lines) == many and max(map(len, lines)) <= 80
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["base (1234abcd)", "fast (5678ef01)",
                                                                    "target 0.5"]
