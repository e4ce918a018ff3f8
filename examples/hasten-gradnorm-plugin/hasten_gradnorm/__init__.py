"""hasten-gradnorm: the second worked example of docs/plugins.md.

Measures the norm of the gradient after every backward (before clipping and
the optimizer step) and logs it with the training metrics:

* ``grad/norm``: the norm at the logging step;
* ``grad/norm_max``: the largest norm since the previous logging step.

The norms stay on the device between logging steps (no host sync per step).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

import hasten


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    norm_type: float = Field(2.0, gt=0, description="p of the p-norm over all gradients (2 = Euclidean)")
    warn_above: float | None = Field(
        None, gt=0, description="print a warning when a logged norm exceeds this value (null = never)"
    )


class GradNorm(hasten.Plugin):
    """Logs the gradient norm after backward as grad/norm and grad/norm_max."""

    name = "gradnorm"
    Settings = Settings

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.last: torch.Tensor | None = None
        self.largest: torch.Tensor | None = None

    @hasten.hookimpl
    def hasten_after_backward(self, state: hasten.State) -> None:
        grads = [p.grad.detach() for p in state.model.parameters() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([torch.linalg.vector_norm(g, self.settings.norm_type) for g in grads])
        norm = torch.linalg.vector_norm(norms, self.settings.norm_type)
        self.last = norm
        self.largest = norm if self.largest is None else torch.maximum(self.largest, norm)

    @hasten.hookimpl
    def hasten_step_metrics(self, state: hasten.State) -> dict[str, float] | None:
        if self.last is None or self.largest is None:
            return None
        metrics = {"grad/norm": float(self.last), "grad/norm_max": float(self.largest)}
        self.largest = None  # a new window starts
        limit = self.settings.warn_above
        if limit is not None and metrics["grad/norm_max"] > limit and state.is_main:
            print(f"warning: gradient norm {metrics['grad/norm_max']:.3g} > {limit} at step {state.step + 1}")
        return metrics

    @hasten.hookimpl
    def hasten_state_dict(self, state: hasten.State) -> dict[str, Any]:
        # The window's maximum so far: a resumed run logs the same grad/norm_max.
        return {self.name: {"largest": None if self.largest is None else float(self.largest)}}

    @hasten.hookimpl
    def hasten_load_state_dict(self, state: hasten.State, blob: dict[str, Any]) -> None:
        largest = (blob.get(self.name) or {}).get("largest")
        self.largest = None if largest is None else torch.tensor(largest, device=state.device)

    @staticmethod
    @hasten.hookimpl
    def hasten_add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        parser = subparsers.add_parser("grad-norm", help="hasten-gradnorm: the gradient norm of one batch")
        parser.add_argument("config", help="YAML or TOML config file")
        parser.set_defaults(handler=_cmd_grad_norm)


def _cmd_grad_norm(args: argparse.Namespace) -> int:
    """Train one step of CONFIG with the plugin on and print the norm."""
    config = hasten.load_config(args.config, ["run.max_steps=1", "run.log_every=1", "tracking.enabled=false",
                                              "run.progress=false"])
    config.plugins.setdefault("gradnorm", {})
    result = hasten.train(config)
    print(f"grad/norm {result.metrics['grad/norm']:.4g}")
    return 0
