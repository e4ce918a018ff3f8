"""The hasten adapter of the (Super-)Progressive schedule: sets ``state.resolution``
and ``state.aug_magnitude`` every step from a table built once before training.

The core augmentation (``hasten.data.augment``) renders every view at
``state.resolution`` with colour-jitter strength ``state.aug_magnitude / 5``,
and the built-in accounting counts each step's FLOPs at ``state.resolution``,
so this plugin only has to set the two numbers.
"""

from __future__ import annotations

from array import array
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

import hasten
from hasten.api import check_resolution, smallest_resolution
from hasten_progressive.schedules import (
    Mode,
    check_arguments,
    check_resolutions,
    magnitude_at,
    mean_inverse_square,
    num_stages,
    quadratic_speedup,
    resolution_at,
)

KEY = "plugins.progressive"


class ProgressiveSettings(BaseModel):
    """``plugins.progressive`` settings."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(
        "super",
        description="super: full resolution during the LR warm-up, then r_min rising to r_max; "
        "classic: Progressive Learning, r_min rising to r_max from step 0",
    )
    min_resolution: int = Field(96, gt=0, description="r_min, pixels (a multiple of resolution_step)")
    max_resolution: int | None = Field(
        None, gt=0, description="r_max, pixels; default: data.resolution (evaluation also runs at r_max)"
    )
    resolution_step: int = Field(32, gt=0, description="resolutions are multiples of this (stage size)")
    warmup_steps: int | None = Field(
        None,
        ge=0,
        description="super mode: steps at full resolution; default: the LR schedule's warm-up "
        "(schedule.warmup_* of warmup_cosine, or f1clr's t_w; 0 without one)",
    )
    min_magnitude: float = Field(4.0, ge=0, le=30, description="augmentation magnitude at the first step")
    max_magnitude: float = Field(6.0, ge=0, le=30, description="augmentation magnitude at the last step (5 = SimCLR)")

    @model_validator(mode="after")
    def _magnitudes_rise(self) -> ProgressiveSettings:
        if self.min_magnitude > self.max_magnitude:
            raise ValueError(
                f"min_magnitude {self.min_magnitude} is above max_magnitude {self.max_magnitude}; "
                "the magnitude rises over training"
            )
        return self


def _user_error(problem: ValueError, note: str = "") -> hasten.UserError:
    # check_arguments names the argument first: "min_resolution: ..." -> "plugins.progressive.min_resolution: ..."
    return hasten.UserError(f"{KEY}.{problem}{note}")


def check_model_resolutions(
    model: nn.Module, resolutions: list[int], settings: ProgressiveSettings, max_resolution: int
) -> None:
    """Raise UserError when a module of ``model`` that declares ``min_resolution``
    (every hasten backbone) cannot take one of ``resolutions``."""
    for module in model.modules():
        declared: Any = getattr(module, "min_resolution", None)
        if declared is None:
            continue
        minimum = int(declared)
        patch = getattr(module, "patch_size", None)
        patch = patch if isinstance(patch, int) else None
        smallest = resolutions[0]
        if minimum > 0 and smallest < minimum:
            legal = smallest_resolution(module, multiple_of=settings.resolution_step)
            fix = (
                f"the smallest legal value (a multiple of resolution_step {settings.resolution_step}"
                f"{f' and of the patch size {patch}' if patch else ''}) is {legal}"
            )
            if legal > max_resolution:
                fix += f", above max_resolution {max_resolution}: lower resolution_step or raise max_resolution"
            raise hasten.UserError(
                f"{KEY}.min_resolution: {smallest} is below the smallest input {type(module).__name__} "
                f"accepts ({minimum}); {fix}"
            )
        for resolution in resolutions:
            if resolution == smallest:
                key = f"{KEY}.min_resolution"
            elif resolution == max_resolution:
                key = f"{KEY}.max_resolution"
            else:
                key = f"{KEY}.resolution_step"
            check_resolution(module, resolution, key)


class Progressive(hasten.Plugin):
    """Super-Progressive learning (mode super) or Progressive Learning (mode classic)."""

    name = "progressive"
    Settings = ProgressiveSettings
    provides = ("resolution_schedule",)

    def __init__(self, settings: ProgressiveSettings) -> None:
        super().__init__(settings)
        self.max_resolution = 0
        self.warmup_steps = 0
        # Per-step tables, built once before the first step: the step hook is two lookups.
        self.resolutions: array[int] | None = None
        self.magnitudes: array[float] | None = None

    # ---------------------------------------------------------------- checks
    def _resolution_arguments(self, max_resolution: int) -> dict[str, object]:
        s = self.settings
        return dict(
            mode=s.mode, min_resolution=s.min_resolution, max_resolution=max_resolution,
            resolution_step=s.resolution_step,
        )

    @hasten.hookimpl
    def hasten_configure(self, config: hasten.Config) -> None:
        """Reject inconsistent resolutions before anything is built."""
        max_resolution = self.settings.max_resolution or config.data.resolution
        note = "" if self.settings.max_resolution else f" (max_resolution defaults to data.resolution {max_resolution})"
        try:
            # total_steps is not known yet (run.epochs): the resolutions alone are checked here.
            check_resolutions(self.settings.min_resolution, max_resolution, self.settings.resolution_step)
        except ValueError as problem:
            raise _user_error(problem, note) from None

    @hasten.hookimpl
    def hasten_setup(self, state: hasten.State) -> None:
        """Check that the model takes every scheduled resolution; fix r_max."""
        s = self.settings
        if state.task.info.is_vector:
            raise hasten.UserError(
                f"{KEY}: a resolution schedule needs image data; data.dataset {state.config.data.dataset!r} "
                "holds vectors. Remove the plugin for this dataset"
            )
        self.max_resolution = s.max_resolution or state.max_resolution
        # The schedule's r_max is this run's full resolution: evaluation runs there too.
        state.max_resolution = self.max_resolution
        count = num_stages(s.min_resolution, self.max_resolution, s.resolution_step)
        resolutions = [s.min_resolution + k * s.resolution_step for k in range(count)]
        check_model_resolutions(state.model, resolutions, s, self.max_resolution)
        # state.warmup_steps is final here: the LR schedule's owner publishes it in a tryfirst set-up
        self._build(state)

    def _build(self, state: hasten.State) -> None:
        s = self.settings
        total = state.total_steps
        inherited = s.warmup_steps is None
        warmup = (state.warmup_steps if inherited else s.warmup_steps) if s.mode == "super" else 0
        try:
            check_arguments(total, warmup_steps=warmup, **self._resolution_arguments(self.max_resolution))  # type: ignore[arg-type]
        except ValueError as problem:
            note = " (inherited from the LR schedule's warm-up)" if inherited else ""
            raise _user_error(problem, note) from None
        self.warmup_steps = warmup
        args = self._resolution_arguments(self.max_resolution)
        steps = range(total)
        self.resolutions = array("l", (resolution_at(t, total, warmup_steps=warmup, **args) for t in steps))  # type: ignore[arg-type]
        low, high = s.min_magnitude, s.max_magnitude
        self.magnitudes = array("d", (magnitude_at(t, total, min_magnitude=low, max_magnitude=high) for t in steps))
        state.scratch[self.name] = {"warmup_steps": warmup, "max_resolution": self.max_resolution}

    # --------------------------------------------------------------- per step
    @hasten.hookimpl
    def hasten_step_start(self, state: hasten.State) -> None:
        assert self.resolutions is not None and self.magnitudes is not None
        step = min(state.step, len(self.resolutions) - 1)
        state.resolution = self.resolutions[step]
        state.aug_magnitude = self.magnitudes[step]


    # ----------------------------------------------------------- planning
    @hasten.hookimpl
    def hasten_plan_summary(self, state: hasten.State, resolutions: list[int]) -> dict[str, Any] | None:
        """``hasten estimate``: eq. 3.9's quadratic estimate of the planned schedule (docs/methods.md)."""
        if not resolutions:
            return None
        figures = {
            # eq. 3.9, as the research states it
            "M_eq_3_9": mean_inverse_square(resolutions, state.max_resolution),
            # the same cost ~ r^2 assumption, as a ratio of summed costs
            "r2_cost_speedup": quadratic_speedup(resolutions, state.max_resolution),
        }
        lines = []
        if len(set(resolutions)) > 1:
            lines = [
                f"quadratic estimate M = 1/L sum (r_max/r_t)^2 (docs/methods.md eq. 3.9): {figures['M_eq_3_9']:.3f}x",
                f"cost ~ r^2 as a ratio of summed costs: {figures['r2_cost_speedup']:.3f}x",
            ]
        return {"key": "quadratic", "figures": figures, "lines": lines}
