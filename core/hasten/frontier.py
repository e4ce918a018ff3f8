"""Speed-up of a recipe against a baseline's accuracy-vs-compute frontier.

A *frontier* is the baseline trained at several lengths (each run fully
annealed at its own length): points (training FLOPs, metric). A recipe's
speed-up at equal accuracy is the baseline FLOPs needed for the recipe's
metric divided by the recipe's FLOPs (docs/methods.md, "Speed-up
accounting"). The baseline FLOPs come from the frontier's monotone
envelope (the best metric reached at or below each cost: a longer run that
scored lower does not make the baseline worse), interpolated
piecewise-linearly in log FLOPs. A recipe above the frontier's best point
has no interpolated cost (it beats every baseline run: "above"); one below
the cheapest point gets only an upper bound ("below").

Pure functions: no torch, no MLflow; tested on synthetic frontiers with
known answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Point = tuple[float, float]  # (training FLOPs, metric)


@dataclass(frozen=True)
class FrontierSpeedup:
    """Where a recipe's (FLOPs, metric) sits against a frontier.

    ``status``: ``inside`` (the metric lies within the frontier's range:
    ``baseline_flops`` and ``speedup`` are interpolated), ``above`` (better
    than every frontier point: no finite baseline cost; ``speedup`` is None
    and ``bound`` the speed-up against the frontier's best point, a lower
    bound), ``below`` (worse than the cheapest point: ``bound`` is an upper
    bound, the cheapest point's FLOPs / the recipe's).
    """

    status: Literal["inside", "above", "below"]
    baseline_flops: float | None
    speedup: float | None
    bound: float | None

    def text(self) -> str:
        if self.status == "inside":
            return f"{self.speedup:.2f}x"
        if self.status == "above":
            return f"above the frontier (>= {self.bound:.2f}x)"
        return f"below the frontier (<= {self.bound:.2f}x)"


def envelope(points: Sequence[Point], higher_is_better: bool = True) -> list[Point]:
    """The frontier's monotone envelope: sorted by FLOPs, each metric the best reached so far."""
    if not points:
        raise ValueError("a frontier needs at least one point")
    if any(not (math.isfinite(f) and f > 0) for f, _ in points):
        raise ValueError("frontier FLOPs must be finite and positive")
    sign = 1.0 if higher_is_better else -1.0
    out: list[Point] = []
    best = -math.inf
    for flops, value in sorted(points):
        best = max(best, sign * value)
        out.append((flops, sign * best))
    return out


def baseline_flops_for(points: Sequence[Point], value: float, higher_is_better: bool = True) -> float | None:
    """The baseline FLOPs at which the frontier first reaches ``value``; None when it never does.

    Below the cheapest point the cheapest point's FLOPs are returned (the
    frontier is not extrapolated downwards: see :func:`speedup_against`).
    """
    sign = 1.0 if higher_is_better else -1.0
    env = [(f, sign * m) for f, m in envelope(points, higher_is_better)]
    target = sign * value
    if target > env[-1][1]:
        return None
    for index, (flops, metric) in enumerate(env):
        if metric >= target:
            if index == 0:
                return flops
            f0, m0 = env[index - 1]
            share = (target - m0) / (metric - m0)  # m0 < target <= metric
            return math.exp(math.log(f0) + share * (math.log(flops) - math.log(f0)))
    return None  # pragma: no cover - the check above returns first


def _first_at_best(env: Sequence[Point]) -> float:
    """The cheapest FLOPs at which an envelope reaches its best value."""
    return next(f for f, m in env if m == env[-1][1])


def speedup_against(
    points: Sequence[Point], flops: float, value: float, higher_is_better: bool = True
) -> FrontierSpeedup:
    """The recipe's (``flops``, ``value``) against the frontier ``points``."""
    if not (math.isfinite(flops) and flops > 0):
        raise ValueError("the recipe's FLOPs must be finite and positive")
    env = envelope(points, higher_is_better)
    sign = 1.0 if higher_is_better else -1.0
    best = env[-1][1]
    cheapest_flops, cheapest = env[0]
    if sign * value > sign * best:
        return FrontierSpeedup("above", None, None, _first_at_best(env) / flops)
    if sign * value < sign * cheapest:
        return FrontierSpeedup("below", None, None, cheapest_flops / flops)
    needed = baseline_flops_for(points, value, higher_is_better)
    assert needed is not None
    return FrontierSpeedup("inside", needed, needed / flops, None)


def speedup_at_best(
    baseline: Sequence[Point], recipe: Sequence[Point], higher_is_better: bool = True
) -> FrontierSpeedup:
    """Speed-up at the baseline frontier's best value, read on the recipe's own frontier.

    For a recipe trained at several lengths that ends above the baseline's frontier (where
    :func:`speedup_against` gives only a bound): the FLOPs at which the baseline's envelope first
    reaches its best value, divided by the FLOPs at which the recipe's envelope reaches that value
    (interpolated in log FLOPs). ``inside``: the recipe reaches it within its lengths; ``above``: its
    cheapest length already does (``bound``, a lower bound on the speed-up); ``below``: its longest
    length does not (``bound``, an upper bound).
    """
    env = envelope(baseline, higher_is_better)
    best = env[-1][1]
    baseline_cost = _first_at_best(env)
    mine = envelope(recipe, higher_is_better)
    sign = 1.0 if higher_is_better else -1.0
    if sign * mine[0][1] >= sign * best:
        return FrontierSpeedup("above", baseline_cost, None, baseline_cost / mine[0][0])
    needed = baseline_flops_for(recipe, best, higher_is_better)
    if needed is None:
        return FrontierSpeedup("below", baseline_cost, None, baseline_cost / mine[-1][0])
    return FrontierSpeedup("inside", baseline_cost, baseline_cost / needed, None)
