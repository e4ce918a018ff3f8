"""Hard Augment's selection, as pure tensor functions (docs/methods.md section 4).

For every image, m augmented views are scored pairwise (C(m, 2) per-image
pair losses, from the task's ``all_pair_losses``) and the pair with the
LARGEST loss is trained:

    L_ha = 1/|B| sum_x max_{(i, j)} L(z_i, z_j)

Mining runs at the selection resolution r_sel; eq. 3.11 gives the fraction
of a step's cost that is training,

    M_ha = r^2 C / (r^2 C + m r_sel^2),

C = cost of a training step / cost of one forward of one view at r (6 for
two views, forward + backward = 3 forwards each), so the mining overhead is
1 - M_ha. Nothing here loops over images or pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pair_table(m: int, device: torch.device | str | None = None) -> Tensor:
    """The C(m, 2) view pairs (i < j) as a (P, 2) long tensor, in ``torch.combinations`` order
    (the column order of the task's ``all_pair_losses``)."""
    if m < 2:
        raise ValueError(f"need at least 2 views to form a pair, got {m}")
    return torch.combinations(torch.arange(m, device=device), r=2)


def hardest_pairs(pair_losses: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The hardest pair of every image.

    ``pair_losses`` is (N, P) with P = C(m, 2) columns in ``pairs`` order.
    Returns (pair column (N,), first view (N,), second view (N,)); ties go to
    the first column (``argmax``).
    """
    if pair_losses.dim() != 2 or pair_losses.shape[1] != pairs.shape[0]:
        raise ValueError(f"pair_losses must be (N, {pairs.shape[0]}), got {tuple(pair_losses.shape)}")
    best = pair_losses.argmax(dim=1)
    chosen = pairs[best]
    return best, chosen[:, 0], chosen[:, 1]


def gather_views(views: Tensor, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Per image n, views[first[n], n] and views[second[n], n] from (m, N, ...) views (advanced indexing)."""
    images = torch.arange(views.shape[1], device=views.device)
    return views[first, images], views[second, images]


def other_views(m: int, first: Tensor, second: Tensor) -> Tensor:
    """The (N, m - 2) view indices that were not selected, ascending, per image."""
    n = first.shape[0]
    every = torch.arange(m, device=first.device).expand(n, m)
    keep = (every != first[:, None]) & (every != second[:, None])
    return every[keep].view(n, m - 2)


def overhead_fraction(resolution: float, selection_resolution: float, num_views: int, step_cost: float = 6.0) -> float:
    """Mining share of the cost, 1 - M_ha = m r_sel^2 / (r^2 C + m r_sel^2) (eq. 3.11)."""
    mining = num_views * selection_resolution**2
    return mining / (resolution**2 * step_cost + mining)
