"""The F1-CLR plugin: sets every step's LR and momentum from :func:`hasten_f1clr.f1clr`.

It provides the ``lr_schedule`` capability, so the core schedule steps aside
(and a config that also writes a ``schedule:`` section is rejected by the
core). It also contributes the ``hasten lr-find`` command.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

import hasten
from hasten_f1clr.schedule import f1clr, warmup_steps_for

WARMUP_KEYS = ("warmup_steps", "warmup_epochs", "warmup_fraction")


class F1CLRSettings(BaseModel):
    """``plugins.f1clr`` settings."""

    model_config = ConfigDict(extra="forbid")

    max_lr: float = Field(gt=0, description="peak learning rate eps_max, reached at the end of the warm-up")
    warmup_steps: int | None = Field(None, gt=0, description="fixed warm-up length t_w in optimizer steps")
    warmup_epochs: float | None = Field(
        None, gt=0, description="fixed warm-up length in epochs (converted with the run's steps per epoch)"
    )
    warmup_fraction: float | None = Field(
        None, gt=0, lt=1, description="classic 1-cycle: warm-up = round(fraction * total steps)"
    )
    momentum_low: float = Field(0.85, ge=0, lt=1, description="momentum (SGD) / beta1 (Adam) at the LR peak")
    momentum_high: float = Field(0.95, ge=0, lt=1, description="momentum (SGD) / beta1 (Adam) at both ends")
    final_lr: float = Field(0.0, ge=0, description="floor the annealing phase ends at (0 = eq. 3.8 exactly)")

    @model_validator(mode="after")
    def _check(self) -> F1CLRSettings:
        given = [key for key in WARMUP_KEYS if getattr(self, key) is not None]
        if len(given) != 1:
            shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in given) or "none"
            raise ValueError(
                "set exactly one of plugins.f1clr.warmup_steps, plugins.f1clr.warmup_epochs, "
                f"plugins.f1clr.warmup_fraction (got {shown})"
            )
        if self.momentum_low > self.momentum_high:
            raise ValueError(
                f"plugins.f1clr.momentum_low ({self.momentum_low}) must be <= "
                f"plugins.f1clr.momentum_high ({self.momentum_high})"
            )
        if self.final_lr >= self.max_lr:
            raise ValueError(
                f"plugins.f1clr.final_lr ({self.final_lr}) must be below plugins.f1clr.max_lr ({self.max_lr})"
            )
        return self


class F1CLR(hasten.Plugin):
    """Fixed 1-cycle LR schedule with anti-phased momentum (docs/methods.md section 2, eq. 3.8)."""

    name = "f1clr"
    Settings = F1CLRSettings
    provides = ("lr_schedule",)

    def __init__(self, settings: F1CLRSettings) -> None:
        super().__init__(settings)
        self.warmup_steps = 0
        self.total_steps = 0

    # tryfirst: the LR schedule's owner publishes state.warmup_steps before any other plugin's set-up
    @hasten.hookimpl(tryfirst=True)
    def hasten_setup(self, state: hasten.State) -> None:
        s = self.settings
        key = next(k for k in WARMUP_KEYS if getattr(s, k) is not None)
        warmup = warmup_steps_for(
            state.total_steps,
            state.steps_per_epoch,
            warmup_steps=s.warmup_steps,
            warmup_epochs=s.warmup_epochs,
            warmup_fraction=s.warmup_fraction,
        )
        if not 0 < warmup < state.total_steps:
            converted = "" if key == "warmup_steps" else f" = {warmup} warm-up steps"
            raise hasten.UserError(
                f"plugins.f1clr.{key}: {getattr(s, key)!r}{converted} does not fit the run of "
                f"{state.total_steps} steps ({state.steps_per_epoch} steps per epoch); "
                f"allowed: 0 < warm-up steps < {state.total_steps}"
            )
        self.warmup_steps = warmup
        self.total_steps = state.total_steps
        state.warmup_steps = warmup  # published for other plugins (e.g. progressive)

    @hasten.hookimpl
    def hasten_step_start(self, state: hasten.State) -> None:
        s = self.settings
        state.lr, state.momentum = f1clr(
            state.step, self.total_steps, self.warmup_steps, s.max_lr, s.momentum_low, s.momentum_high,
            final_lr=s.final_lr,
        )

    @staticmethod
    @hasten.hookimpl
    def hasten_add_commands(subparsers: Any) -> None:
        """Add ``hasten lr-find CONFIG``: the LR range test."""
        from hasten.api import add_config_arguments

        parser: argparse.ArgumentParser = subparsers.add_parser(
            "lr-find",
            help="LR range test: sweep the LR exponentially, suggest min/max LR, plot the loss curves",
            description=(
                "Train a throw-away copy of CONFIG (without its LR schedule) while the LR grows exponentially "
                "from --min-lr to --max-lr; record the smoothed training loss and the loss on a fixed "
                "validation batch at every step; stop when the smoothed loss exceeds 4x its best; print the "
                "suggested min and max LR and write a plot."
            ),
        )
        add_config_arguments(parser)
        parser.add_argument("--min-lr", type=float, default=1e-3, help="first LR of the sweep (default 1e-3)")
        parser.add_argument("--max-lr", type=float, default=1.0, help="last LR of the sweep (default 1)")
        parser.add_argument("--steps", type=int, default=200, help="number of steps of the sweep (default 200)")
        parser.add_argument(
            "--val-samples",
            type=int,
            default=256,
            help="size of the fixed validation batch evaluated at every step (default 256; the research used 4096)",
        )
        parser.add_argument("--plot", default=None, metavar="PATH", help="PNG to write (default RUN_DIR/lr_find.png)")
        parser.set_defaults(handler=_run_lr_find)


def _run_lr_find(args: argparse.Namespace) -> int:
    from hasten_f1clr.lr_find import cli_lr_find

    return cli_lr_find(args)
