"""The pure schedule function (docs/methods.md section 3)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from hasten_progressive import mean_inverse_square, quadratic_speedup, schedule, stages

DEFAULTS = dict(min_resolution=96, max_resolution=224, resolution_step=32)


def resolutions(total: int, **kwargs) -> list[int]:
    return [schedule(t, total, **{**DEFAULTS, **kwargs})[0] for t in range(total)]


@pytest.mark.parametrize(("total", "warmup"), [(600, 100), (24, 4), (1000, 80), (7, 2), (5, 3), (100, 0), (3001, 17)])
def test_super_mode_shape(total, warmup):
    rs = resolutions(total, mode="super", warmup_steps=warmup)
    assert rs[:warmup] == [224] * warmup  # full resolution during the LR warm-up
    assert rs[warmup] == 96  # the minimum right after it
    ramp = rs[warmup:]
    assert all(a <= b for a, b in pairwise(ramp))  # non-decreasing after
    assert all(r % 32 == 0 for r in rs)
    assert rs[-1] == 224  # maximum reached by the end
    assert set(ramp) <= {96, 128, 160, 192, 224}


def test_about_six_stages_for_96_to_224():
    """96 -> 224 with a warm-up of L/6: the full-resolution warm-up plus 5 ramp stages of
    equal length = 6 constant-resolution phases of L/6 each (5 distinct sizes)."""
    rs = resolutions(600, warmup_steps=100)
    assert stages(rs) == [(0, 100, 224), (100, 100, 96), (200, 100, 128), (300, 100, 160), (400, 100, 192),
                          (500, 100, 224)]
    assert sorted(set(rs)) == [96, 128, 160, 192, 224]
    # Eq. 3.9 (cost ~ r^2) for this schedule is the research's 1.60x for r_min = 96.
    assert quadratic_speedup(rs, 224) == pytest.approx(1.598, abs=1e-3)
    # ... and 1.42x for r_min = 128 (research: 1.40x), 1.78x for 64 (research: 1.82x).
    for minimum, speedup in [(128, 1.424), (64, 1.783)]:
        rs = resolutions(600, warmup_steps=100, min_resolution=minimum)
        assert quadratic_speedup(rs, 224) == pytest.approx(speedup, abs=1e-3)


def test_stage_lengths_differ_by_at_most_one_step():
    for total, warmup in [(1000, 80), (97, 13), (30, 5)]:
        lengths = [n for _, n, r in stages(resolutions(total, warmup_steps=warmup))][1:]
        assert len(lengths) == 5
        assert max(lengths) - min(lengths) <= 1


def test_classic_mode_starts_at_the_minimum():
    rs = resolutions(500, mode="classic", warmup_steps=100)  # warm-up is ignored in classic mode
    assert rs[0] == 96 and rs[-1] == 224
    assert stages(rs) == [(0, 100, 96), (100, 100, 128), (200, 100, 160), (300, 100, 192), (400, 100, 224)]
    assert quadratic_speedup(rs, 224) == pytest.approx(5 / (sum((r / 224) ** 2 for r in (96, 128, 160, 192)) + 1))


def test_magnitude_rises_linearly_from_min_to_max():
    total = 101
    mags = [schedule(t, total, **DEFAULTS, warmup_steps=10)[1] for t in range(total)]
    assert mags[0] == 4.0 and mags[-1] == 6.0
    assert mags[50] == pytest.approx(5.0)  # 5 = the SimCLR strength, half-way
    assert mags[25] == pytest.approx(4.5)
    assert all(a < b for a, b in pairwise(mags))
    assert schedule(0, 10, **DEFAULTS, min_magnitude=2, max_magnitude=10)[1] == 2.0


def test_other_sizes_and_steps():
    rs = resolutions(40, min_resolution=16, max_resolution=32, resolution_step=8, warmup_steps=10)
    assert stages(rs) == [(0, 10, 32), (10, 10, 16), (20, 10, 24), (30, 10, 32)]
    # r_min == r_max: a constant schedule
    assert set(resolutions(20, min_resolution=224, warmup_steps=5)) == {224}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(min_resolution=256), "min_resolution: 256 is above max_resolution 224"),
        (dict(resolution_step=0), "resolution_step: need > 0"),
        (dict(min_resolution=100),
         "min_resolution: 100 is not a multiple of resolution_step 32; nearest multiples: 96, 128"),
        (dict(max_resolution=200), "max_resolution: 200 is not a multiple"),
        (dict(warmup_steps=9), "warmup_steps: 9 leaves 1 step"),
        (dict(mode="fast"), "mode: 'fast' is not one of super, classic"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        schedule(0, 10, **{**DEFAULTS, **kwargs})


def test_eq_3_9_mean_inverse_square():
    # M = 1/L sum (r_max / r_t)^2: four steps at half resolution, four at full
    assert mean_inverse_square([8] * 4 + [16] * 4, 16) == pytest.approx(2.5)
    assert mean_inverse_square([224] * 3, 224) == 1.0
