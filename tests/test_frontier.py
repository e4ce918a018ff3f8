"""Speed-up against a frontier (hasten.frontier), on synthetic frontiers with known answers."""

from __future__ import annotations

import math

import pytest

from hasten.frontier import baseline_flops_for, envelope, speedup_against, speedup_at_best

# metric rises by 0.1 per doubling of FLOPs: log-linear, so interpolation in log FLOPs is exact
LOG_LINEAR = [(1e9, 0.5), (2e9, 0.6), (4e9, 0.7), (8e9, 0.8)]


def test_interpolation_is_linear_in_log_flops() -> None:
    # 0.65 lies half-way between 2e9 and 4e9 on a log axis: sqrt(2e9 * 4e9)
    assert baseline_flops_for(LOG_LINEAR, 0.65) == pytest.approx(math.sqrt(8e18), rel=1e-12)
    assert baseline_flops_for(LOG_LINEAR, 0.7) == pytest.approx(4e9)
    assert baseline_flops_for(LOG_LINEAR, 0.5) == pytest.approx(1e9)


def test_speedup_is_baseline_flops_over_recipe_flops() -> None:
    # a recipe reaching 0.7 with 2e9 FLOPs: the baseline needs 4e9 -> 2x
    result = speedup_against(LOG_LINEAR, 2e9, 0.7)
    assert result.status == "inside"
    assert result.speedup == pytest.approx(2.0)
    # reaching 0.75 (baseline: sqrt(4e9 * 8e9)) with 4e9 FLOPs
    assert speedup_against(LOG_LINEAR, 4e9, 0.75).speedup == pytest.approx(math.sqrt(2.0))
    # a recipe worse than the baseline at its cost: speed-up below 1
    assert speedup_against(LOG_LINEAR, 8e9, 0.6).speedup == pytest.approx(0.25)


def test_above_the_best_point_is_not_extrapolated() -> None:
    result = speedup_against(LOG_LINEAR, 4e9, 0.85)
    assert result.status == "above" and result.speedup is None and result.baseline_flops is None
    assert result.bound == pytest.approx(2.0)  # at least the best point's cost / the recipe's
    assert "above the frontier" in result.text()


def test_below_the_cheapest_point_gives_an_upper_bound() -> None:
    result = speedup_against(LOG_LINEAR, 0.5e9, 0.4)
    assert result.status == "below" and result.speedup is None
    assert result.bound == pytest.approx(2.0)


def test_envelope_makes_the_frontier_monotone() -> None:
    # the longest run scored lower than a shorter one: it does not make the baseline worse
    noisy = [(1e9, 0.5), (2e9, 0.7), (4e9, 0.65), (8e9, 0.8)]
    assert [m for _, m in envelope(noisy)] == [0.5, 0.7, 0.7, 0.8]
    assert baseline_flops_for(noisy, 0.7) == pytest.approx(2e9)  # the cheapest run that reached it
    assert baseline_flops_for(noisy, 0.75) == pytest.approx(math.sqrt(4e9 * 8e9))


def test_lower_is_better_metrics() -> None:
    losses = [(1e9, 1.0), (2e9, 0.8), (4e9, 0.6)]
    assert speedup_against(losses, 1e9, 0.8, higher_is_better=False).speedup == pytest.approx(2.0)
    assert speedup_against(losses, 1e9, 0.5, higher_is_better=False).status == "above"
    assert speedup_against(losses, 1e9, 1.2, higher_is_better=False).status == "below"


def test_unsorted_points_and_bad_input() -> None:
    assert baseline_flops_for(list(reversed(LOG_LINEAR)), 0.7) == pytest.approx(4e9)
    with pytest.raises(ValueError):
        envelope([])
    with pytest.raises(ValueError):
        speedup_against(LOG_LINEAR, 0.0, 0.7)


def test_speedup_at_best_reads_the_baseline_best_on_the_recipe_frontier() -> None:
    # the baseline first reaches its best, 0.48, at 4e12 (the longer 0.479 run does not count)
    baseline = [(1e12, 0.45), (2e12, 0.44), (4e12, 0.48), (8e12, 0.479)]
    inside = speedup_at_best(baseline, [(0.5e12, 0.40), (1e12, 0.50)])
    assert inside.status == "inside"
    # 0.48 is 0.8 of the way from 0.40 to 0.50: 0.5e12 * 2 ** 0.8 FLOPs
    assert inside.speedup == pytest.approx(4e12 / (0.5e12 * 2**0.8))
    above = speedup_at_best(baseline, [(2e12, 0.50), (3e12, 0.55)])
    assert (above.status, above.speedup, above.bound) == ("above", None, pytest.approx(2.0))
    below = speedup_at_best(baseline, [(1e12, 0.30), (2e12, 0.40)])
    assert (below.status, below.speedup, below.bound) == ("below", None, pytest.approx(2.0))
    lower = speedup_at_best([(1e12, 0.9), (4e12, 0.5)], [(1e12, 0.7), (2e12, 0.3)], higher_is_better=False)
    assert lower.status == "inside" and lower.speedup == pytest.approx(4e12 / (1e12 * 2**0.5))
