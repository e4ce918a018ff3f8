"""hasten-ema: the complete plugin of the README's "writing a plugin" tutorial.

Keeps an exponential moving average of the model's weights,
    ema <- decay * ema + (1 - decay) * weights     (every ``every`` steps),
and evaluates it beside the model (metrics prefixed ``ema/``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

import hasten


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decay: float = Field(0.99, gt=0, lt=1, description="weight of the old average")
    every: int = Field(1, ge=1, description="update every N steps")


class EMA(hasten.Plugin):
    """Exponential moving average of the weights, evaluated as ema/*."""

    name = "ema"
    Settings = Settings

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.average: torch.nn.Module | None = None

    @hasten.hookimpl
    def hasten_setup(self, state: hasten.State) -> None:
        self.average = copy.deepcopy(state.model).eval().requires_grad_(False)

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        if self.average is None or (state.step + 1) % self.settings.every:
            return
        with torch.no_grad():
            current = state.model.state_dict()
            for name, value in self.average.state_dict().items():
                if value.dtype.is_floating_point:
                    value.mul_(self.settings.decay).add_(current[name], alpha=1 - self.settings.decay)
                else:
                    value.copy_(current[name])

    @hasten.hookimpl
    def hasten_evaluate(self, state: hasten.State) -> dict[str, float]:
        assert self.average is not None
        # Evaluate the average with the task's own evaluation by swapping it in.
        original = state.task.model
        state.task.model = self.average
        try:
            metrics = state.task.evaluate(state)
        finally:
            state.task.model = original
        return {f"ema/{key.split('/', 1)[-1]}": value for key, value in metrics.items()}

    @hasten.hookimpl
    def hasten_state_dict(self, state: hasten.State) -> dict[str, Any]:
        assert self.average is not None
        return {self.name: self.average.state_dict()}

    @hasten.hookimpl
    def hasten_load_state_dict(self, state: hasten.State, blob: dict[str, Any]) -> None:
        if self.name in blob and self.average is not None:
            self.average.load_state_dict(blob[self.name])
