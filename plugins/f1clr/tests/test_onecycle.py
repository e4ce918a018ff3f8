"""F1-CLR with warm-up = pct_start * L against torch's OneCycleLR (cos, two phases).

OneCycleLR ends its warm-up at step pct_start * T - 1, one step before
t_w = pct_start * T (docs/methods.md, implementation notes): its warm-up is eq. 3.8's
with a denominator of t_w - 1, and its anneal is eq. 3.8's shifted by one step,
OneCycleLR[s] = f1clr(s + 1). Its end points are max_lr / div_factor and that
divided by final_div_factor, so large factors approach eq. 3.8's zeros; the
absolute tolerance is scaled to max_lr for the LRs near zero.
"""

from __future__ import annotations

import pytest
import torch

from hasten_f1clr import f1clr


def one_cycle_sequence(total: int, pct_start: float, max_lr: float, low: float, high: float):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=max_lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=total, pct_start=pct_start, anneal_strategy="cos",
        three_phase=False, cycle_momentum=True, base_momentum=low, max_momentum=high,
        div_factor=1e6, final_div_factor=1e6,
    )
    lrs, momenta = [], []
    for step in range(total):
        group = optimizer.param_groups[0]
        lrs.append(group["lr"])
        momenta.append(group["momentum"])
        optimizer.step()
        if step < total - 1:
            scheduler.step()
    return lrs, momenta


@pytest.mark.parametrize(("total", "pct_start", "max_lr", "low", "high"), [
    (200, 0.25, 0.5, 0.85, 0.95),
    (1000, 0.3, 3e-3, 0.80, 0.99),
])
def test_matches_one_cycle_lr(total, pct_start, max_lr, low, high):
    warmup = round(pct_start * total)
    torch_lrs, torch_momenta = one_cycle_sequence(total, pct_start, max_lr, low, high)
    near_zero = 1e-5 * max_lr  # OneCycleLR starts at max_lr * 1e-6 and ends at max_lr * 1e-12

    # Peaks one step apart.
    assert torch_lrs.index(max(torch_lrs)) == warmup - 1
    ours_at = [f1clr(t, total, warmup, max_lr, low, high) for t in range(total + 1)]
    assert [v[0] for v in ours_at].index(max_lr) == warmup

    # Annealing phase, shifted by one step: within 1e-3 relative (plus the near-zero tolerance).
    for step in range(warmup - 1, total):
        lr, momentum = ours_at[step + 1]
        assert torch_lrs[step] == pytest.approx(lr, rel=1e-3, abs=near_zero), step
        assert torch_momenta[step] == pytest.approx(momentum, abs=1e-9), step

    # Warm-up phase: eq. 3.8's warm-up over t_w - 1 steps.
    for step in range(warmup - 1):
        lr, momentum = f1clr(step, total, warmup - 1, max_lr, low, high)
        assert torch_lrs[step] == pytest.approx(lr, rel=1e-3, abs=near_zero), step
        assert torch_momenta[step] == pytest.approx(momentum, abs=1e-9), step


def test_the_one_step_offset_is_what_separates_them():
    """Without the shift, the anneal differs by more than the tolerance: the comparison can fail."""
    total, pct_start, max_lr = 200, 0.25, 0.5
    warmup = round(pct_start * total)
    torch_lrs, _ = one_cycle_sequence(total, pct_start, max_lr, 0.85, 0.95)
    unshifted = [f1clr(t, total, warmup, max_lr, 0.85, 0.95)[0] for t in range(total)]
    worst = max(abs(a - b) / b for a, b in zip(torch_lrs[warmup:total - 20], unshifted[warmup:total - 20]))
    assert worst > 1e-2
