"""The ``cooldown`` plugin: answers ``hasten_sampling_active`` with False for the last steps.

Sampling plugins (selection, hard augment) consult ``state.sampling_active(step)``,
which ANDs every plugin's answer, so they fall back to uniform sampling during
the cool-down without knowing this plugin. Alone, it changes nothing in
training and only reports the phase (metric ``cooldown/active`` and one line
on rank 0 when the phase switches).
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict, Field, model_validator

import hasten
from hasten_cooldown.phase import DEFAULT_FRACTION, cooldown_start, cooldown_steps, in_cooldown


class CooldownSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float | None = Field(
        None, ge=0, le=1, description=f"share of the total steps at the end with uniform sampling "
        f"(default {DEFAULT_FRACTION} when steps is not set)"
    )
    steps: int | None = Field(None, ge=0, description="cool-down length in steps, instead of fraction")

    @model_validator(mode="after")
    def _one_length(self) -> CooldownSettings:
        if self.fraction is not None and self.steps is not None:
            raise ValueError(
                f"plugins.cooldown.fraction ({self.fraction}) and plugins.cooldown.steps ({self.steps}) "
                "are both set; set exactly one"
            )
        return self


class Cooldown(hasten.Plugin):
    """Uniform sampling for the last part of training: turns selection / hard augment off."""

    name = "cooldown"
    Settings = CooldownSettings

    def __init__(self, settings: CooldownSettings) -> None:
        super().__init__(settings)
        self._total = -1
        self.length = 0
        self._phase: bool | None = None

    def _length(self, total_steps: int) -> int:
        # Recomputed only if total_steps changes; the stream may ask before setup finished.
        if total_steps != self._total:
            if self.settings.steps is not None and self.settings.steps > total_steps:
                raise hasten.UserError(
                    f"plugins.cooldown.steps: {self.settings.steps} exceeds the {total_steps} training steps; "
                    f"allowed: 0..{total_steps}"
                )
            self.length = cooldown_steps(total_steps, self.settings.fraction, self.settings.steps)
            self._total = total_steps
        return self.length

    def start_step(self, state: hasten.State) -> int:
        return cooldown_start(state.total_steps, self._length(state.total_steps))

    @hasten.hookimpl
    def hasten_setup(self, state: hasten.State) -> None:
        state.scratch["cooldown/start_step"] = self.start_step(state)

    @hasten.hookimpl
    def hasten_sampling_active(self, state: hasten.State, step: int) -> bool | None:
        return False if in_cooldown(step, state.total_steps, self._length(state.total_steps)) else None

    @hasten.hookimpl
    def hasten_step_start(self, state: hasten.State) -> None:
        phase = in_cooldown(state.step, state.total_steps, self._length(state.total_steps))
        if phase == self._phase:
            return
        # First step of the run (or of a resume) only reports a cool-down already under way.
        if state.is_main and (phase or self._phase is not None):
            start = self.start_step(state)
            what = "uniform sampling (selection / hard mining off)" if phase else "non-uniform sampling allowed"
            print(
                f"cooldown: step {state.step}: {what}; cool-down = steps {start}..{state.total_steps - 1} "
                f"({self.length} of {state.total_steps})",
                file=sys.stderr,
                flush=True,
            )
        self._phase = phase

    @hasten.hookimpl
    def hasten_step_metrics(self, state: hasten.State) -> dict[str, float]:
        return {"cooldown/active": float(in_cooldown(state.step, state.total_steps, self._length(state.total_steps)))}
