"""hasten_f1clr.f1clr against eq. 3.8 of docs/methods.md, computed by hand."""

from __future__ import annotations

import itertools
import math

import pytest

from hasten_f1clr import f1clr, warmup_steps_for

# Setting A: L = 100, t_w = 20, eps_max = 0.4, beta_l = 0.85, beta_h = 0.95.
# Setting B: L = 1000, t_w = 250, eps_max = 2e-3, beta_l = 0.80, beta_h = 0.99.
# At t = t_w/2 and t = (t_w + L)/2 the cosine is cos(pi/2) = 0, so the LR is
# eps_max/2 and the momentum (beta_l + beta_h)/2; at t = L-1 the anneal's
# cosine is cos(pi (L-1-t_w)/(L-t_w)) = -cos(pi/(L-t_w)).
CASES = [
    # (L, t_w, eps_max, beta_l, beta_h, t, expected lr, expected momentum)
    (100, 20, 0.4, 0.85, 0.95, 0, 0.0, 0.95),
    (100, 20, 0.4, 0.85, 0.95, 10, 0.2, 0.90),
    (100, 20, 0.4, 0.85, 0.95, 20, 0.4, 0.85),
    (100, 20, 0.4, 0.85, 0.95, 60, 0.2, 0.90),
    # 0.2 * (1 - cos(pi/80)) = 1.5419276e-4 ; 0.95 - 0.05 * (1 - cos(pi/80)) = 0.94996145
    (100, 20, 0.4, 0.85, 0.95, 99, 1.5419276e-4, 0.94996145),
    (1000, 250, 2e-3, 0.80, 0.99, 0, 0.0, 0.99),
    (1000, 250, 2e-3, 0.80, 0.99, 125, 1e-3, 0.895),
    (1000, 250, 2e-3, 0.80, 0.99, 250, 2e-3, 0.80),
    (1000, 250, 2e-3, 0.80, 0.99, 625, 1e-3, 0.895),
    # 1e-3 * (1 - cos(pi/750)) = 8.7730e-9 ; 0.99 - 0.095 * (1 - cos(pi/750)) = 0.98999917
    (1000, 250, 2e-3, 0.80, 0.99, 999, 8.77298e-9, 0.98999917),
]


@pytest.mark.parametrize(("total", "warmup", "max_lr", "low", "high", "step", "lr", "momentum"), CASES)
def test_values_by_hand(total, warmup, max_lr, low, high, step, lr, momentum):
    got_lr, got_momentum = f1clr(step, total, warmup, max_lr, low, high)
    assert got_lr == pytest.approx(lr, rel=1e-5, abs=1e-15)
    assert got_momentum == pytest.approx(momentum, rel=1e-7)


def test_last_step_matches_the_closed_form():
    """The t = L-1 values above, from the written-out formula rather than rounded constants."""
    lr, momentum = f1clr(99, 100, 20, 0.4, 0.85, 0.95)
    assert lr == pytest.approx(0.2 * (1 - math.cos(math.pi / 80)), rel=1e-12)
    assert momentum == pytest.approx(0.95 - 0.05 * (1 - math.cos(math.pi / 80)), rel=1e-12)


@pytest.mark.parametrize(("total", "warmup", "max_lr", "low", "high"), [(100, 20, 0.4, 0.85, 0.95),
                                                                         (1000, 250, 2e-3, 0.80, 0.99)])
def test_momentum_is_anti_phased(total, warmup, max_lr, low, high):
    """Normalised LR + normalised momentum = 1 at every step; LR peak = momentum trough = t_w."""
    values = [f1clr(t, total, warmup, max_lr, low, high) for t in range(total)]
    for lr, momentum in values:
        assert lr / max_lr + (momentum - low) / (high - low) == pytest.approx(1.0, abs=1e-12)
    lrs = [v[0] for v in values]
    momenta = [v[1] for v in values]
    assert lrs.index(max(lrs)) == warmup
    assert momenta.index(min(momenta)) == warmup
    assert max(lrs) == pytest.approx(max_lr) and min(momenta) == pytest.approx(low)


@pytest.mark.parametrize(("total", "warmup"), [(100, 20), (1000, 250), (300, 299)])
def test_lr_is_continuous_at_the_end_of_warmup(total, warmup):
    max_lr = 0.4
    # The warm-up branch, extended to t = t_w, lands on the anneal's starting value.
    assert max_lr - 0.5 * max_lr * (math.cos(math.pi) + 1) == f1clr(warmup, total, warmup, max_lr, 0.85, 0.95)[0]
    # No jump: every step changes the LR by at most the largest slope of the two half-cosines.
    bound = max_lr * math.pi / (2 * min(warmup, total - warmup)) + 1e-12
    lrs = [f1clr(t, total, warmup, max_lr, 0.85, 0.95)[0] for t in range(total + 1)]
    assert max(abs(b - a) for a, b in itertools.pairwise(lrs)) <= bound
    # Around the peak the change is second order: 1 - cos(pi/t_w) ~ (pi/t_w)^2 / 2.
    left = lrs[warmup] - lrs[warmup - 1]
    assert left == pytest.approx(0.5 * max_lr * (1 - math.cos(math.pi / warmup)), rel=1e-9)


def test_warmup_is_fixed_when_training_gets_longer():
    """F1-CLR: doubling L leaves the warm-up curve unchanged and stretches only the anneal."""
    short = [f1clr(t, 400, 100, 1.0, 0.85, 0.95) for t in range(100)]
    long = [f1clr(t, 800, 100, 1.0, 0.85, 0.95) for t in range(100)]
    assert short == long
    assert f1clr(250, 400, 100, 1.0, 0.85, 0.95)[0] == pytest.approx(f1clr(450, 800, 100, 1.0, 0.85, 0.95)[0])


def test_final_lr_floor():
    lr_end, _ = f1clr(100, 100, 20, 0.4, 0.85, 0.95, final_lr=0.01)
    assert lr_end == pytest.approx(0.01)
    assert f1clr(20, 100, 20, 0.4, 0.85, 0.95, final_lr=0.01)[0] == pytest.approx(0.4)
    # mid-anneal: 0.01 + 0.2 * (0.4 - 0.01) / 0.4 = 0.205
    assert f1clr(60, 100, 20, 0.4, 0.85, 0.95, final_lr=0.01)[0] == pytest.approx(0.205)
    # the warm-up is untouched by the floor
    assert f1clr(10, 100, 20, 0.4, 0.85, 0.95, final_lr=0.01)[0] == pytest.approx(0.2)


def test_classic_one_cycle_is_a_warmup_fraction():
    assert warmup_steps_for(1000, 50, warmup_fraction=0.3) == 300
    assert warmup_steps_for(999, 50, warmup_fraction=0.25) == 250  # round(249.75)
    assert warmup_steps_for(1000, 50, warmup_epochs=2.5) == 125
    assert warmup_steps_for(1000, 50, warmup_steps=7) == 7
    with pytest.raises(ValueError, match="exactly one"):
        warmup_steps_for(1000, 50, warmup_steps=7, warmup_fraction=0.3)


@pytest.mark.parametrize(("step", "total", "warmup"), [(0, 100, 100), (0, 100, -1), (101, 100, 20), (-1, 100, 20)])
def test_rejects_impossible_arguments(step, total, warmup):
    with pytest.raises(ValueError):
        f1clr(step, total, warmup, 0.1, 0.85, 0.95)
