"""hasten-cooldown: uniform sampling for the last part of training (docs/methods.md section 6).

``hasten_cooldown.plugin.Cooldown`` is the plugin (entry point ``cooldown``);
``hasten_cooldown.phase`` holds the phase arithmetic.
"""

from __future__ import annotations

from hasten_cooldown.phase import DEFAULT_FRACTION, cooldown_start, cooldown_steps, in_cooldown

__all__ = ["DEFAULT_FRACTION", "cooldown_start", "cooldown_steps", "in_cooldown"]
