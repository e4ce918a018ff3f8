"""The pure selection rule (eq. 4.4): distributions checked with numbers."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from hasten_selection import rank_log_coefficients, select

DRAWS = 20_000


def ranks_of(losses: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rank (0 = lowest loss) of the candidates at ``positions``."""
    ranks = losses.argsort(dim=-1).argsort(dim=-1)
    return ranks.gather(-1, positions)


def random_losses(draws: int, candidates: int, seed: int = 1) -> torch.Tensor:
    """Distinct losses in a random order per draw (so position says nothing about rank)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(draws, candidates, generator=generator, dtype=torch.float64).float()


def first_draw_pvalue(counts: torch.Tensor, coefficients: torch.Tensor) -> float:
    """Chi-square p-value of first-draw rank counts against probabilities proportional to ``coefficients``."""
    support = coefficients > 0
    expected = coefficients[support] / coefficients[support].sum() * counts.sum()
    return float(stats.chisquare(counts[support].double().numpy(), expected.double().numpy()).pvalue)


def test_coefficients_match_reference_code():
    for beta in (0.0, 0.5, 1.0, 2.0, 4.0):
        reference = (torch.arange(10) / 10) ** beta
        assert torch.allclose(rank_log_coefficients(10, beta).exp(), reference.float(), atol=1e-6)
    assert rank_log_coefficients(4, 1.0)[0] == float("-inf")
    assert torch.equal(rank_log_coefficients(4, 0.0), torch.zeros(4))


@pytest.mark.parametrize("strategy", ["probabilistic", "greedy", "uniform"])
@pytest.mark.parametrize(("candidates", "keep"), [(32, 16), (48, 16), (10, 9), (5, 1)])
def test_exactly_b_unique_indices(strategy, candidates, keep):
    losses = random_losses(200, candidates)
    chosen = select(losses, keep, 1.0, torch.Generator().manual_seed(0), strategy=strategy)
    assert chosen.shape == (200, keep)
    assert chosen.dtype == torch.int64
    assert int(chosen.min()) >= 0 and int(chosen.max()) < candidates
    assert (chosen.sort(dim=-1).values.diff(dim=-1) > 0).all()  # no repeats
    single = select(losses[0], keep, 1.0, torch.Generator().manual_seed(0), strategy=strategy)
    assert single.shape == (keep,)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
def test_first_draw_is_proportional_to_rank_power(beta):
    """The first draw picks rank k with probability (k/b_bar)^beta / sum (eq. 4.4)."""
    candidates = 8
    losses = random_losses(DRAWS, candidates)
    chosen = select(losses, 4, beta, torch.Generator().manual_seed(2))
    first = ranks_of(losses, chosen)[:, 0]
    counts = torch.bincount(first, minlength=candidates)
    coefficients = rank_log_coefficients(candidates, beta).double().exp()
    assert first_draw_pvalue(counts, coefficients) > 1e-3
    if beta > 0:
        assert counts[0] == 0
        # Power check: the same counts clearly reject the neighbouring rule p = (k + 1)^beta.
        shifted = (torch.arange(candidates, dtype=torch.float64) + 1) ** beta
        assert first_draw_pvalue(counts, shifted) < 1e-6


def test_beta_zero_is_uniform_over_many_draws():
    """Inclusion counts of every position are uniform (chi-square, corrected for binomial variance)."""
    candidates, keep = 32, 16
    losses = random_losses(DRAWS, candidates)
    chosen = select(losses, keep, 0.0, torch.Generator().manual_seed(3))
    for where in (chosen, ranks_of(losses, chosen)):  # uniform over positions and over loss ranks
        counts = torch.bincount(where.flatten(), minlength=candidates).double()
        inclusion = keep / candidates
        expected = DRAWS * inclusion
        statistic = float(((counts - expected) ** 2 / (expected * (1 - inclusion))).sum())
        assert stats.chi2.sf(statistic, candidates - 1) > 1e-3
        assert (counts / DRAWS - inclusion).abs().max() < 0.02


def test_beta_one_prefers_high_rank_and_never_rank_zero():
    candidates, keep = 16, 8
    losses = random_losses(DRAWS, candidates)
    chosen_ranks = ranks_of(losses, select(losses, keep, 1.0, torch.Generator().manual_seed(4)))
    frequency = torch.bincount(chosen_ranks.flatten(), minlength=candidates).double() / DRAWS
    assert frequency[0] == 0
    # Increasing with rank (3 standard errors of slack where neighbours are close near 1).
    assert (frequency.diff() > -0.01).all()
    assert frequency[-1] > frequency[1] + 0.5
    assert frequency[1:].sum() == pytest.approx(keep)


def test_softening_matches_methods_note():
    """b_bar = 2b, beta = 1: hardest sample kept ~80% of the time; the easier half supplies ~30%."""
    keep = 64
    losses = random_losses(4000, 2 * keep)
    chosen_ranks = ranks_of(losses, select(losses, keep, 1.0, torch.Generator().manual_seed(5)))
    hardest = (chosen_ranks == 2 * keep - 1).any(dim=-1).double().mean()
    easier_half = (chosen_ranks < keep).double().mean()
    assert float(hardest) == pytest.approx(0.80, abs=0.03)
    assert float(easier_half) == pytest.approx(0.30, abs=0.02)


def test_greedy_is_top_b():
    losses = random_losses(50, 20)
    chosen = select(losses, 7, 1.0, torch.Generator().manual_seed(0), strategy="greedy")
    expected = losses.argsort(dim=-1, descending=True)[:, :7]
    assert torch.equal(chosen.sort(dim=-1).values, expected.sort(dim=-1).values)


def test_deterministic_under_seeded_generator():
    losses = random_losses(1, 64)[0]
    first = select(losses, 32, 1.0, torch.Generator().manual_seed(7))
    again = select(losses, 32, 1.0, torch.Generator().manual_seed(7))
    other = select(losses, 32, 1.0, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first.sort().values, other.sort().values)


def test_depends_on_loss_ranks_only():
    """Any monotone transform of the losses gives the same selection."""
    losses = random_losses(1, 40)[0]
    chosen = select(losses, 20, 2.0, torch.Generator().manual_seed(9))
    transformed = select(torch.exp(3 * losses) + 5, 20, 2.0, torch.Generator().manual_seed(9))
    assert torch.equal(chosen, transformed)


def test_bad_arguments():
    losses = torch.rand(8)
    with pytest.raises(ValueError, match="batch_size"):
        select(losses, 9, 1.0)
    with pytest.raises(ValueError, match="strategy"):
        select(losses, 4, 1.0, strategy="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta"):
        select(losses, 4, -1.0)
