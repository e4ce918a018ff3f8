"""Plot the (Super-)Progressive schedule for the README: plugins/progressive/docs/progressive_schedule.png.

Super-Progressive (full resolution during the LR warm-up, then 96 -> 224 px in
stages of 32) beside classic Progressive Learning (96 -> 224 px from step 0),
with the warm-up + cosine LR the super mode takes its warm-up from, and the
augmentation magnitude 4 -> 6. Legends give eq. 3.9's cost ~ r^2 speed-up.

    PYTHONPATH=core:plugins/progressive python3 plugins/progressive/scripts/plot_schedule.py [--out PATH]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hasten_progressive import quadratic_speedup, schedule

TOTAL, WARMUP = 600, 100  # warm-up = 1/6 of training, as in the research's Imagenette runs
SIZES = dict(min_resolution=96, max_resolution=224, resolution_step=32)


def warmup_cosine(step: int) -> float:
    """The LR (relative to its peak) of the warm-up + cosine baseline (docs/methods.md section 2)."""
    if step < WARMUP:
        return step / WARMUP
    return 0.5 * (math.cos(math.pi * (step - WARMUP) / (TOTAL - WARMUP)) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[1] / "docs" / "progressive_schedule.png"
    parser.add_argument("--out", default=str(default))
    args = parser.parse_args()

    steps = range(TOTAL)
    figure = Figure(figsize=(7.5, 6.0), dpi=110)
    FigureCanvasAgg(figure)
    res_axes, lr_axes, mag_axes = figure.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 1.2]})
    for mode, style, color in (("super", "-", "tab:blue"), ("classic", "--", "tab:orange")):
        values = [schedule(t, TOTAL, mode=mode, warmup_steps=WARMUP, **SIZES) for t in steps]
        resolutions = [v[0] for v in values]
        speedup = quadratic_speedup(resolutions, SIZES["max_resolution"])
        label = f"{mode}: {'224 px warm-up, then ' if mode == 'super' else ''}96 -> 224 px, {speedup:.2f}x (eq. 3.9)"
        res_axes.step(steps, resolutions, style, where="post", color=color, label=label)
        if mode == "super":
            mag_axes.plot(steps, [v[1] for v in values], color="tab:green")
    res_axes.set_yticks(range(96, 225, 32))
    res_axes.set_ylabel("training resolution (px)")
    res_axes.set_title("Super-Progressive learning: L = 600 steps, LR warm-up 100 steps", fontsize=10)
    res_axes.legend(fontsize=8, loc="lower right")
    lr_axes.plot(steps, [warmup_cosine(t) for t in steps], color="black")
    lr_axes.set_ylabel("LR / peak")
    mag_axes.set_ylabel("magnitude")
    mag_axes.set_xlabel("step")
    for axes in (res_axes, lr_axes, mag_axes):
        axes.axvline(WARMUP, color="black", linewidth=0.6, alpha=0.4)
        axes.grid(True, alpha=0.3)
    figure.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
