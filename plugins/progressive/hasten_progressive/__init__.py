"""hasten-progressive: Super-Progressive learning (and the Progressive Learning baseline).

``schedule(step, total_steps, ...) -> (resolution, magnitude)`` is the pure
schedule (docs/methods.md section 3); :class:`Progressive` is the plugin that sets
``state.resolution`` and ``state.aug_magnitude`` from it every step.

The math lives in :mod:`hasten_progressive.schedules` (plural) so that the
function ``hasten_progressive.schedule`` does not shadow a module of the same
name.
"""

from __future__ import annotations

from hasten_progressive.plugin import Progressive
from hasten_progressive.schedules import (
    magnitude_at,
    mean_inverse_square,
    num_stages,
    quadratic_speedup,
    resolution_at,
    schedule,
    stages,
)

__all__ = [
    "Progressive", "magnitude_at", "mean_inverse_square", "num_stages", "quadratic_speedup", "resolution_at",
    "schedule", "stages",
]
