"""hasten-selection: Fast Online Minibatch Selection (docs/methods.md section 5).

``select`` is the pure selection rule (``prune_easy`` the unbiased pruning
variant); ``hasten_selection.plugin.Selection``
is the plugin (entry point ``selection``).
"""

from __future__ import annotations

from hasten_selection.select import STRATEGIES, prune_easy, rank_log_coefficients, select

__all__ = ["STRATEGIES", "prune_easy", "rank_log_coefficients", "select"]
