"""hasten-f1clr: the fixed 1-cycle LR schedule with anti-phased momentum, and ``hasten lr-find``."""

from __future__ import annotations

from hasten_f1clr.schedule import f1clr, warmup_steps_for

__all__ = ["f1clr", "warmup_steps_for"]
