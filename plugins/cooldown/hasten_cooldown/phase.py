"""Cool-down phase arithmetic (docs/methods.md section 6), pure functions.

The last ``n`` of ``L`` training steps use plain uniform sampling so the
model re-adapts to the true data distribution after hard-example training:
step t (0-based) is in the cool-down iff ``t >= L - n``, with
``n = round(fraction * L)`` (default fraction 0.1) or a given step count.
"""

from __future__ import annotations

DEFAULT_FRACTION = 0.1


def cooldown_steps(total_steps: int, fraction: float | None = None, steps: int | None = None) -> int:
    """Length n of the cool-down for a run of ``total_steps`` (exactly one of fraction / steps, else 10%)."""
    if fraction is not None and steps is not None:
        raise ValueError("give fraction or steps, not both")
    if steps is not None:
        if not 0 <= steps <= total_steps:
            raise ValueError(f"steps must be in [0, {total_steps}], got {steps}")
        return steps
    share = DEFAULT_FRACTION if fraction is None else fraction
    if not 0 <= share <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {share}")
    return round(share * total_steps)


def cooldown_start(total_steps: int, length: int) -> int:
    """First step of the cool-down (``total_steps`` when it is empty)."""
    return total_steps - length


def in_cooldown(step: int, total_steps: int, length: int) -> bool:
    """Is ``step`` (0-based) one of the last ``length`` steps of ``total_steps``?"""
    return length > 0 and step >= total_steps - length
