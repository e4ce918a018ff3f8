"""The β figure of the selection README (like the research's Fig. 4.2).

    PYTHONPATH=core:plugins/selection python3 plugins/selection/scripts/plot_beta.py [--out PATH]

Left: the selection coefficient p = P^β of a candidate at loss percentile P
(eq. 4.4) for β = 0, 0.5, 1, 2, 4. Right: what the draw without replacement
makes of it: how often a candidate at percentile P ends up in the batch, for
b_bar = 2b (b = 64), measured with :func:`hasten_selection.select` over 4,000
draws; the dotted line is greedy top-b.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from hasten_selection import rank_log_coefficients, select

BETAS = (0.0, 0.5, 1.0, 2.0, 4.0)
OUT = Path(__file__).resolve().parents[1] / "docs" / "beta.png"


def inclusion(beta: float, keep: int = 64, draws: int = 4000, strategy: str = "probabilistic") -> torch.Tensor:
    """Fraction of draws in which the candidate of each rank (ascending loss) is selected."""
    candidates = 2 * keep
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(draws, candidates, generator=generator)
    chosen = select(losses, keep, beta, generator, strategy=strategy)  # type: ignore[arg-type]
    ranks = losses.argsort(dim=-1).argsort(dim=-1).gather(-1, chosen)
    return torch.bincount(ranks.flatten(), minlength=candidates).double() / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    percentile = torch.arange(100) / 100
    for beta in BETAS:
        left.plot(100 * percentile, rank_log_coefficients(100, beta).exp(), label=f"β = {beta:g}")
        frequency = inclusion(beta)
        right.plot(100 * torch.arange(len(frequency)) / len(frequency), frequency, label=f"β = {beta:g}")
    greedy = inclusion(1.0, strategy="greedy")
    right.plot(100 * torch.arange(len(greedy)) / len(greedy), greedy, "k:", label="greedy")
    left.set(xlabel="loss percentile P of the candidate (%)", ylabel="selection coefficient p = P^β",
             title="coefficients (eq. 4.4)")
    right.set(xlabel="loss percentile P of the candidate (%)", ylabel="P(selected)",
              title="inclusion frequency, b_bar = 2b, without replacement")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
