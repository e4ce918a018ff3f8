"""Fast Online Minibatch Selection: which b of the b_bar candidates to train on.

Pure functions, no model and no run state (docs/methods.md section 5, steps 3-4;
:func:`prune_easy`, beyond the research: section 5.1).
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

Strategy = Literal["probabilistic", "greedy", "uniform", "pruned"]
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
            candidates uniformly, i.e. beta = 0); ``pruned`` is :func:`prune_easy`.

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
    if strategy == "pruned":
        raise ValueError("strategy 'pruned' also gives loss weights: call prune_easy")
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


def prune_easy(
    losses: Tensor,
    batch_size: int,
    prune_ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Unbiased random pruning of well-learned candidates (InfoBatch's rule on a candidate batch;
    docs/methods.md section 5.1): positions of ``batch_size`` candidates and their loss weights.

    A candidate whose loss is below the mean of the candidates' finite losses is
    dropped with probability ``r = prune_ratio``; the b trained samples are a
    uniformly random b of the survivors, and a kept below-mean candidate weighs
    ``1 / (1 - r)``, so a below-mean and an above-mean candidate have the same
    expected weight and the weighted mean loss estimates the candidates' mean
    loss without bias, up to keeping exactly b of a random number of
    survivors (a survivor among fewer is likelier kept: under 1% at
    b_bar = 256, tested). InfoBatch prunes a whole epoch, with the mean over the
    dataset; here the mean is the candidates' own, so no state is needed.
    A candidate with loss ``+inf`` (never trained on: the loss memory) is never
    dropped. Should fewer than b survive, the batch is filled with dropped
    candidates, in random order, at weight 1.

    Args:
        losses: per-candidate losses ``(b_bar,)`` or ``(draws, b_bar)``.
        batch_size: b (``1 <= b <= b_bar``).
        prune_ratio: r in [0, 1).
        generator: source of the randomness (may live on another device).

    Returns:
        int64 positions ``(..., b)`` without repeats, and float32 weights ``(..., b)``.
    """
    if losses.dim() not in (1, 2):
        raise ValueError(f"losses must be (b_bar,) or (draws, b_bar), got shape {tuple(losses.shape)}")
    num_candidates = losses.shape[-1]
    if not 1 <= batch_size <= num_candidates:
        raise ValueError(f"batch_size must be in [1, {num_candidates}] (the candidates), got {batch_size}")
    if not 0 <= prune_ratio < 1:
        raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio}")
    device = losses.device
    noise_device = generator.device if generator is not None else device
    draws = torch.rand((2, *losses.shape), device=noise_device, generator=generator).to(device, non_blocking=True)
    finite = losses.isfinite()
    # The threshold: the mean of the finite losses (a draw whose candidates are all never-seen has none).
    count = finite.sum(dim=-1, keepdim=True)
    total = torch.where(finite, losses, torch.zeros_like(losses)).sum(dim=-1, keepdim=True)
    threshold = total / count.clamp(min=1)
    easy = finite & (losses < threshold)
    dropped = easy & (draws[0] < prune_ratio)
    # Survivors first, each group in random order: the b smallest keys, no host synchronisation.
    keys = draws[1] + dropped.to(draws.dtype)
    keep = keys.topk(batch_size, dim=-1, largest=False, sorted=True).indices
    kept_easy = easy.gather(-1, keep) & ~dropped.gather(-1, keep)
    weights = torch.where(kept_easy, torch.full_like(keys.gather(-1, keep), 1 / (1 - prune_ratio)),
                          torch.ones_like(keys.gather(-1, keep)))
    return keep, weights.float()
