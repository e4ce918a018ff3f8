"""F1-CLR: the fixed 1-cycle learning rate with anti-phased momentum (docs/methods.md section 2, eq. 3.8).

With t the 0-based step, L the total number of steps, t_w the warm-up length,
eps_max the peak LR and beta_l <= beta_h the momentum range::

    eps_t  = eps_max - 1/2 eps_max (cos(pi t/t_w) + 1)                        t < t_w
           = 1/2 eps_max (cos(pi (t - t_w)/(L - t_w)) + 1)                    otherwise
    beta_t = beta_l + 1/2 (beta_h - beta_l)(cos(pi t/t_w) + 1)                t < t_w
           = beta_h - 1/2 (beta_h - beta_l)(cos(pi (t - t_w)/(L - t_w)) + 1)  otherwise

The LR rises 0 -> eps_max while momentum falls beta_h -> beta_l, then the LR
anneals back to 0 while momentum returns to beta_h. F1-CLR keeps t_w fixed
when training gets longer; the classic 1-cycle (eq. 3.7) is the same function
with t_w = round(rho L) for a warm-up fraction rho.
"""

from __future__ import annotations

import math


def f1clr(
    step: int,
    total_steps: int,
    warmup_steps: int,
    max_lr: float,
    momentum_low: float,
    momentum_high: float,
    *,
    final_lr: float = 0.0,
) -> tuple[float, float]:
    """Learning rate and momentum at ``step`` (0-based) of eq. 3.8.

    Args:
        step: the step t, ``0 <= step <= total_steps`` (``total_steps`` itself
            is the end point of the curve: LR 0, momentum ``momentum_high``).
        total_steps: L, the length of training in steps.
        warmup_steps: t_w, ``0 <= t_w < L`` (0 = no warm-up: a pure cosine anneal).
        max_lr: eps_max, the peak LR reached at ``step == warmup_steps``.
        momentum_low: beta_l, the momentum at the LR peak.
        momentum_high: beta_h, the momentum at both ends.
        final_lr: optional floor of the annealing phase (not part of eq. 3.8,
            which is ``final_lr = 0``): the anneal is rescaled to end at
            ``final_lr`` instead of 0, keeping the LR continuous at t_w.

    Returns:
        ``(lr, momentum)`` as plain floats.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"f1clr: need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"f1clr: step {step} outside [0, {total_steps}]")
    momentum_range = momentum_high - momentum_low
    if step < warmup_steps:
        rise = math.cos(math.pi * step / warmup_steps) + 1.0  # 2 at t = 0, -> 0 at t = t_w
        return max_lr - 0.5 * max_lr * rise, momentum_low + 0.5 * momentum_range * rise
    fall = math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)) + 1.0  # 2 at t_w, 0 at L
    lr = 0.5 * max_lr * fall
    if final_lr > 0.0:
        lr = final_lr + lr * (max_lr - final_lr) / max_lr
    return lr, momentum_high - 0.5 * momentum_range * fall


def warmup_steps_for(
    total_steps: int,
    steps_per_epoch: int,
    *,
    warmup_steps: int | None = None,
    warmup_epochs: float | None = None,
    warmup_fraction: float | None = None,
) -> int:
    """t_w in steps from exactly one of the three ways of giving it.

    ``warmup_epochs`` counts ``steps_per_epoch`` steps per epoch (F1-CLR: fixed
    length); ``warmup_fraction`` is the classic 1-cycle, ``round(rho * L)``.
    """
    given = [v is not None for v in (warmup_steps, warmup_epochs, warmup_fraction)]
    if sum(given) != 1:
        raise ValueError("give exactly one of warmup_steps, warmup_epochs, warmup_fraction")
    if warmup_steps is not None:
        return int(warmup_steps)
    if warmup_epochs is not None:
        return round(warmup_epochs * steps_per_epoch)
    assert warmup_fraction is not None
    return round(warmup_fraction * total_steps)
