"""hasten-hardaug: Hard Augment, SSL hard-positive mining (docs/methods.md section 4)."""

from hasten_hardaug.mining import hardest_pairs, other_views, overhead_fraction, pair_table

__all__ = ["hardest_pairs", "other_views", "overhead_fraction", "pair_table"]
