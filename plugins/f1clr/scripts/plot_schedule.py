"""Plot F1-CLR's LR and momentum (eq. 3.8) for the README: plugins/f1clr/docs/f1clr_schedule.png.

Two training lengths with the same fixed warm-up (F1-CLR) beside the classic
1-cycle, whose warm-up is a fixed *fraction* of training (eq. 3.7), so the
figure shows what "fixed" means: longer training only stretches the anneal.

    PYTHONPATH=core:plugins/f1clr python3 plugins/f1clr/scripts/plot_schedule.py [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hasten_f1clr import f1clr

MAX_LR, LOW, HIGH = 0.4, 0.85, 0.95
WARMUP = 250  # F1-CLR: fixed warm-up, in steps
RUNS = [  # (label, total steps, warm-up steps, style)
    ("F1-CLR, L = 1000, t_w = 250", 1000, WARMUP, "-"),
    ("F1-CLR, L = 2000, t_w = 250", 2000, WARMUP, "--"),
    ("1-cycle, L = 2000, t_w = 0.25 L = 500", 2000, round(0.25 * 2000), ":"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "f1clr_schedule.png"))
    args = parser.parse_args()

    figure = Figure(figsize=(7.5, 5.5), dpi=110)
    FigureCanvasAgg(figure)
    lr_axes, momentum_axes = figure.subplots(2, 1, sharex=True)
    for (label, total, warmup, style), color in zip(RUNS, ["tab:blue", "tab:orange", "tab:gray"]):
        steps = range(total + 1)
        values = [f1clr(t, total, warmup, MAX_LR, LOW, HIGH) for t in steps]
        lr_axes.plot(steps, [v[0] for v in values], style, color=color, label=label)
        momentum_axes.plot(steps, [v[1] for v in values], style, color=color, label=label)
    for axes in (lr_axes, momentum_axes):
        axes.axvline(WARMUP, color="black", linewidth=0.6, alpha=0.4)
        axes.grid(True, alpha=0.3)
    lr_axes.set_ylabel("learning rate")
    lr_axes.set_title(f"F1-CLR (eq. 3.8): max_lr {MAX_LR}, momentum {LOW} <-> {HIGH}", fontsize=10)
    lr_axes.legend(fontsize=8)
    momentum_axes.set_ylabel("momentum (SGD) / beta1 (Adam)")
    momentum_axes.set_xlabel("step")
    figure.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
