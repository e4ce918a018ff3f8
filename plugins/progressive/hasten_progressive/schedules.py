"""The (Super-)Progressive learning schedule: pure functions, no torch.

docs/methods.md section 3. Notation: t training step (0-based), L total steps,
t_w the LR warm-up, r_min / r_max the smallest / full resolution, s the
resolution step (32), m_min / m_max the augmentation magnitudes (4 -> 6).

Resolution
    super   (Super-Progressive): r_t = r_max for t < t_w; afterwards r drops
            to r_min and rises linearly back to r_max by the last step.
    classic (Progressive Learning, EfficientNetV2): the same rise from t = 0.

Quantization. The rise is a staircase of K = (r_max - r_min) / s + 1 stages
of (nearly) equal length: with n = L - t_w ramp steps and j = t - t_w the
position in the ramp, stage k = min(K - 1, floor(K j / (n - 1))) and
r_t = r_min + k s. Hence r = r_min right after the warm-up, every value is a
multiple of s (r_min and r_max must be), the values never decrease, and the
last stage (r_max) covers about 1/K of the ramp, so r_max is reached by the
end (n >= 2 is required: one ramp step cannot be both r_min and r_max).
Equal-length stages are what EfficientNetV2 uses; they are the floor of the
line from r_min to r_max + s.

"About 6 stages" (96 -> 224, s = 32): the warm-up at 224 plus the 5 ramp
stages 96, 128, 160, 192, 224 are 6 constant-resolution phases (5 distinct
values). With t_w = L/6 each phase lasts L/6 and eq. 3.9 gives
6 / (1 + (96/224)^2 + (128/224)^2 + (160/224)^2 + (192/224)^2 + 1) = 1.60x,
the speed-up the research reports for r_min = 96.

Magnitude rises linearly over the whole run (both modes):
m_t = m_min + (m_max - m_min) t / (L - 1).

Speed-up (eq. 3.9, cost ~ r^2): M = L r_max^2 / sum_t r_t^2, the cost of L
steps at r_max over the cost of the schedule. (docs/methods.md writes it as
1/L sum_t (r_max/r_t)^2, the mean of the per-step ratios; that reading gives
2.3x for the default schedule, not the reported 1.60x, so the cost ratio is
what the research computes.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

Mode = Literal["super", "classic"]
MODES: tuple[str, ...] = get_args(Mode)  # the one declaration is Mode


def check_resolutions(min_resolution: int, max_resolution: int, resolution_step: int) -> None:
    """Raise ValueError (naming the argument) unless r_min <= r_max are positive multiples of s."""
    if resolution_step <= 0:
        raise ValueError(f"resolution_step: need > 0, got {resolution_step}")
    if min_resolution <= 0:
        raise ValueError(f"min_resolution: need > 0, got {min_resolution}")
    if min_resolution > max_resolution:
        raise ValueError(f"min_resolution: {min_resolution} is above max_resolution {max_resolution}")
    for name, value in (("min_resolution", min_resolution), ("max_resolution", max_resolution)):
        if value % resolution_step:
            below = value - value % resolution_step
            raise ValueError(
                f"{name}: {value} is not a multiple of resolution_step {resolution_step}; "
                f"nearest multiples: {below or resolution_step}, {below + resolution_step}"
            )


def check_arguments(
    total_steps: int,
    *,
    mode: str,
    min_resolution: int,
    max_resolution: int,
    resolution_step: int,
    warmup_steps: int,
) -> None:
    """Raise ValueError (naming the argument) for a schedule that cannot be built."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    check_resolutions(min_resolution, max_resolution, resolution_step)
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps: need >= 0, got {warmup_steps}")
    # The ramp needs two steps to start at r_min and still end at r_max.
    ramp_start = warmup_steps if mode == "super" else 0
    if total_steps - ramp_start < 2:
        if ramp_start:
            raise ValueError(
                f"warmup_steps: {warmup_steps} leaves {max(0, total_steps - warmup_steps)} step(s) after the warm-up "
                f"of a {total_steps}-step run; the resolution ramp needs >= 2 (warm-up <= {total_steps - 2})"
            )
        raise ValueError(f"total_steps: the resolution ramp needs >= 2 steps, got {total_steps}")


def num_stages(min_resolution: int, max_resolution: int, resolution_step: int) -> int:
    """K, the number of distinct resolutions of the ramp: r_min, r_min + s, ..., r_max."""
    return (max_resolution - min_resolution) // resolution_step + 1


def resolution_at(
    step: int,
    total_steps: int,
    *,
    mode: str = "super",
    min_resolution: int = 96,
    max_resolution: int = 224,
    resolution_step: int = 32,
    warmup_steps: int = 0,
) -> int:
    """r_t: see the module docstring. Integer arithmetic only, so stage edges are exact."""
    ramp_start = warmup_steps if mode == "super" else 0
    if step < ramp_start:
        return max_resolution
    ramp_steps = total_steps - ramp_start
    stages = num_stages(min_resolution, max_resolution, resolution_step)
    stage = 0 if ramp_steps < 2 else min(stages - 1, (stages * (step - ramp_start)) // (ramp_steps - 1))
    return min_resolution + stage * resolution_step


def magnitude_at(step: int, total_steps: int, *, min_magnitude: float = 4.0, max_magnitude: float = 6.0) -> float:
    """m_t = m_min + (m_max - m_min) t / (L - 1): m_min at the first step, m_max at the last."""
    if total_steps < 2:
        return float(min_magnitude)
    return min_magnitude + (max_magnitude - min_magnitude) * min(step, total_steps - 1) / (total_steps - 1)


def schedule(
    step: int,
    total_steps: int,
    *,
    mode: str = "super",
    min_resolution: int = 96,
    max_resolution: int = 224,
    resolution_step: int = 32,
    warmup_steps: int = 0,
    min_magnitude: float = 4.0,
    max_magnitude: float = 6.0,
) -> tuple[int, float]:
    """(resolution, augmentation magnitude) of ``step`` in a ``total_steps`` run (docs/methods.md section 3).

    ``mode="super"``: full resolution while ``step < warmup_steps``, then
    ``min_resolution`` rising in equal stages of ``resolution_step`` to
    ``max_resolution`` by the last step; ``mode="classic"``: the same rise
    from step 0 (``warmup_steps`` is ignored). The magnitude rises linearly
    from ``min_magnitude`` to ``max_magnitude`` over the run.
    Raises ValueError for inconsistent arguments.
    """
    check_arguments(
        total_steps,
        mode=mode,
        min_resolution=min_resolution,
        max_resolution=max_resolution,
        resolution_step=resolution_step,
        warmup_steps=warmup_steps,
    )
    resolution = resolution_at(
        step,
        total_steps,
        mode=mode,
        min_resolution=min_resolution,
        max_resolution=max_resolution,
        resolution_step=resolution_step,
        warmup_steps=warmup_steps,
    )
    return resolution, magnitude_at(step, total_steps, min_magnitude=min_magnitude, max_magnitude=max_magnitude)


def stages(resolutions: Sequence[int]) -> list[tuple[int, int, int]]:
    """Constant-resolution phases of a per-step sequence: ``(first_step, num_steps, resolution)``."""
    phases: list[tuple[int, int, int]] = []
    for step, resolution in enumerate(resolutions):
        if phases and phases[-1][2] == resolution:
            first, count, _ = phases[-1]
            phases[-1] = (first, count + 1, resolution)
        else:
            phases.append((step, 1, resolution))
    return phases


def quadratic_speedup(resolutions: Sequence[int], max_resolution: int) -> float:
    """Eq. 3.9 with cost ~ r^2: ``L r_max^2 / sum_t r_t^2`` (1.0 for a constant full resolution)."""
    if not resolutions:
        raise ValueError("resolutions: empty sequence")
    return len(resolutions) * max_resolution**2 / sum(r * r for r in resolutions)


def mean_inverse_square(resolutions: Sequence[int], max_resolution: int) -> float:
    """Eq. 3.9 as the research states it: ``M = 1/L sum_t (r_max / r_t)^2`` (1.0 for a constant full resolution)."""
    if not resolutions:
        raise ValueError("resolutions: empty sequence")
    return sum((max_resolution / r) ** 2 for r in resolutions) / len(resolutions)


__all__ = [
    "MODES",
    "Mode",
    "check_arguments",
    "check_resolutions",
    "magnitude_at",
    "mean_inverse_square",
    "num_stages",
    "quadratic_speedup",
    "resolution_at",
    "schedule",
    "stages",
]
