"""Fast Online Minibatch Selection: which b of the b_bar candidates to train on.

Pure functions, no model and no run state (docs/methods.md section 5, steps 3-4).
With the candidates sorted by ascending loss, the candidate of rank k
(k = 0 for the lowest loss) gets the selection coefficient

    p_k = (k / b_bar) ** beta                                   (eq. 4.4)

(the reference code's ``probs = (arange(b_bar) / b_bar) ** beta``), and b
candidates are drawn from the multinomial over p WITHOUT replacement. beta = 0
is uniform sampling; beta > 0 never draws the lowest-loss candidate (p_0 = 0).

The draw is a Gumbel top-k: the b largest keys ``log p_k + G_k`` with i.i.d.
Gumbel noise ``G_k = -log E_k``, ``E_k ~ Exp(1)``. This is exactly the
distribution of successive draws without replacement (what
``torch.multinomial(p, b, replacement=False)`` does internally), and, unlike
``torch.multinomial``, it never synchronises with the host on a GPU.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

Strategy = Literal["probabilistic", "greedy", "uniform"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)  # the one declaration is Strategy


def rank_log_coefficients(num_candidates: int, beta: float, device: torch.device | str = "cpu") -> Tensor:
    """``log p_k = beta * log(k / b_bar)`` for ranks k = 0..b_bar-1 (eq. 4.4), float32.

    ``-inf`` at rank 0 when beta > 0; all zeros when beta = 0 (``0 ** 0 = 1``).
    Log space keeps large beta from underflowing to ties at zero.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    percentile = torch.arange(num_candidates, dtype=torch.float32, device=device) / num_candidates
    # xlogy(0, 0) = 0: beta = 0 gives the uniform coefficient 1 at rank 0 as well.
    return torch.xlogy(torch.tensor(float(beta), device=device), percentile)


def select(
    losses: Tensor,
    batch_size: int,
    beta: float,
    generator: torch.Generator | None = None,
    strategy: Strategy = "probabilistic",
) -> Tensor:
    """Positions of the ``batch_size`` candidates to train on.

    Args:
        losses: per-candidate losses, shape ``(b_bar,)``, or ``(draws, b_bar)``
            for independent selections in one call (tests, statistics).
        batch_size: b, how many to keep (``1 <= b <= b_bar``).
        beta: the exponent of eq. 4.4 (``probabilistic`` only).
        generator: source of the sampling noise (may live on another device
            than ``losses``); the same generator state gives the same result.
        strategy: ``probabilistic`` (eq. 4.4, sampled without replacement),
            ``greedy`` (the b highest losses) or ``uniform`` (b of the b_bar
            candidates uniformly, i.e. beta = 0).

    Returns:
        int64 positions into the last dimension of ``losses``, shape
        ``(batch_size,)`` or ``(draws, batch_size)``, without repeats. Their
        order is the draw order (the first column is the first draw).
    """
    if losses.dim() not in (1, 2):
        raise ValueError(f"losses must be (b_bar,) or (draws, b_bar), got shape {tuple(losses.shape)}")
    num_candidates = losses.shape[-1]
    if not 1 <= batch_size <= num_candidates:
        raise ValueError(f"batch_size must be in [1, {num_candidates}] (the candidates), got {batch_size}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "greedy":
        return losses.topk(batch_size, dim=-1, sorted=True).indices

    device = losses.device
    noise_device = generator.device if generator is not None else device
    exponential = torch.empty(losses.shape, device=noise_device).exponential_(generator=generator)
    gumbel = -torch.log(exponential.to(device, non_blocking=True))
    if strategy == "uniform" or beta == 0:
        # Every candidate has the same coefficient: the order of the noise alone decides.
        return gumbel.topk(batch_size, dim=-1, sorted=True).indices
    # order[..., k] = position of the candidate of rank k (ascending loss).
    order = losses.argsort(dim=-1, stable=True)
    keys = rank_log_coefficients(num_candidates, beta, device) + gumbel
    chosen_ranks = keys.topk(batch_size, dim=-1, sorted=True).indices
    return order.gather(-1, chosen_ranks)
