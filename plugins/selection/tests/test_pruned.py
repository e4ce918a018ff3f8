"""strategy 'pruned' (InfoBatch's unbiased pruning on a candidate batch, docs/methods.md section 5.1)."""

from __future__ import annotations

from math import comb

import pytest
import torch
import torch.nn.functional as F

import hasten
from hasten.batch import Batch
from hasten.engine import Trainer, train
from hasten_selection import prune_easy

DRAWS = 40_000


def test_below_mean_candidates_are_dropped_with_probability_r_and_the_kept_ones_weigh_1_over_1_minus_r():
    # 4 below-mean candidates (losses 0-3; the mean of the 10 is 8.1) and 6 above; keep 5 of 10, r = 0.5
    losses = torch.tensor([0.0, 1, 2, 3, 10, 11, 12, 13, 14, 15]).expand(DRAWS, 10)
    keep, weights = prune_easy(losses, 5, 0.5, torch.Generator().manual_seed(3))
    assert keep.shape == weights.shape == (DRAWS, 5)
    assert (keep.sort(dim=-1).values.diff(dim=-1) > 0).all()  # no repeats
    chosen = torch.zeros(DRAWS, 10).scatter_(1, keep, 1.0)
    weight_of = torch.zeros(DRAWS, 10).scatter_(1, keep, weights)
    easy, hard = chosen[:, :4].mean(), chosen[:, 4:].mean()
    # Survivors: the 6 hard ones and Binomial(4, 1/2) easy ones; 5 of them kept uniformly at random.
    def kept_share(others: int, always: int) -> float:  # P(kept | survived), the other easy ones Bin(others, 1/2)
        return sum(comb(others, k) / 2**others * min(1.0, 5 / (always + k)) for k in range(others + 1))
    assert float(hard) == pytest.approx(kept_share(4, 6), abs=0.01)
    assert float(easy) == pytest.approx(0.5 * kept_share(3, 7), abs=0.01)  # dropped w.p. r, else a survivor
    assert torch.equal(weight_of[:, :4][chosen[:, :4] > 0], torch.full((int(chosen[:, :4].sum()),), 2.0))
    assert torch.equal(weight_of[:, 4:][chosen[:, 4:] > 0], torch.ones(int(chosen[:, 4:].sum())))


def test_the_expected_weight_is_the_same_for_easy_and_hard_candidates_at_a_training_size():
    """Unbiased up to keeping exactly b of a random number of survivors: within 1% at b_bar = 256."""
    generator = torch.Generator().manual_seed(5)
    losses = torch.rand(2_000, 256, generator=generator) ** 3  # skewed: ~63% below the mean
    keep, weights = prune_easy(losses, 128, 0.5, generator)
    weight_of = torch.zeros_like(losses).scatter_(1, keep, weights)
    easy = losses < losses.mean(dim=1, keepdim=True)
    assert 0.55 < float(easy.float().mean()) < 0.7
    easy_weight, hard_weight = float(weight_of[easy].mean()), float(weight_of[~easy].mean())
    assert easy_weight == pytest.approx(hard_weight, rel=0.01)


def test_r_zero_is_uniform_and_never_seen_candidates_are_never_dropped():
    losses = torch.rand(DRAWS, 8, generator=torch.Generator().manual_seed(1))
    keep, weights = prune_easy(losses, 2, 0.0, torch.Generator().manual_seed(2))
    assert torch.equal(weights, torch.ones_like(weights))
    share = torch.zeros(DRAWS, 8).scatter_(1, keep, 1.0).mean(dim=0)
    assert torch.allclose(share, torch.full((8,), 0.25), atol=0.01)
    # +inf (never trained on) is not below any mean: kept like a hard candidate, at weight 1, and left out
    # of the threshold (the mean of 0, 1, 2, 3 is 1.5: candidates 0 and 1 are the easy ones)
    memory = torch.tensor([0.0, 1.0, 2.0, 3.0, float("inf"), float("inf")]).expand(DRAWS, 6)
    keep, weights = prune_easy(memory, 4, 0.9, torch.Generator().manual_seed(4))
    chosen = torch.zeros(DRAWS, 6).scatter_(1, keep, 1.0).mean(dim=0)
    assert torch.allclose(chosen[2:], chosen[2:].mean().expand(4), atol=0.01)  # never-seen ones = hard ones
    assert float(chosen[0]) == pytest.approx(float(chosen[1]), abs=0.01) and float(chosen[0]) < 0.2
    weight_of = torch.zeros(DRAWS, 6).scatter_(1, keep, weights)
    assert set(weight_of[:, 2:].unique().tolist()) == {0.0, 1.0}  # hard and never-seen: weight 1 when kept


def test_too_few_survivors_are_topped_up_with_dropped_candidates_at_weight_1():
    losses = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0])  # 7 easy of 8; keep 6, r = 0.99
    keep, weights = prune_easy(losses, 6, 0.99, torch.Generator().manual_seed(0))
    assert keep.shape == (6,) and len(set(keep.tolist())) == 6 and 7 in keep.tolist()
    dropped_refill = weights == 1.0
    assert int(dropped_refill.sum()) >= 5  # almost every easy one was dropped and came back at weight 1


def test_deterministic_and_bad_arguments():
    losses = torch.rand(3, 16)
    a = prune_easy(losses, 8, 0.5, torch.Generator().manual_seed(7))
    b = prune_easy(losses, 8, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="prune_ratio"):
        prune_easy(losses, 8, 1.0)
    with pytest.raises(ValueError, match="batch_size"):
        prune_easy(losses, 17, 0.5)


def test_a_weighted_batch_trains_on_the_weighted_mean_loss():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 1])
    weights = torch.tensor([2.0, 1.0, 1.0, 2.0])
    batch = Batch(images=torch.zeros(4, 1, 2, 2), labels=labels, indices=torch.arange(4), loss_weights=weights)
    losses = F.cross_entropy(logits, labels, reduction="none")
    assert batch.mean_loss(losses) == pytest.approx(float((losses * weights).sum() / 4))
    assert torch.equal(batch.subset(torch.tensor([3, 0])).loss_weights, torch.tensor([2.0, 2.0]))
    assert Batch(images=batch.images, labels=labels, indices=batch.indices).mean_loss(losses) == losses.mean()


def test_pruned_selection_with_the_loss_memory_trains_on_weighted_batches(tiny_config):
    config = tiny_config(
        data={"options": {"train_size": 128, "val_size": 32}}, model={"options": {"width": 4}},
        run={"max_steps": 12, "log_every": 1},
        plugins={"selection": {"strategy": "pruned", "prune_ratio": 0.5, "scoring": "memory"}},
    )
    result = train(config)
    state = result.state
    assert state.flops.overhead == {"selection": 0.0}
    plugin = state.scratch["selection"]
    weights = plugin._weights
    assert weights is not None and weights.shape == (16,)
    assert set(weights.unique().tolist()) <= {1.0, 2.0}
    # after the first epoch the memory knows every sample: some trained samples are up-weighted
    assert 0.0 < result.metrics["selection/upweighted_share"] < 1.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prune_ratio": 0.3}, r"plugins\.selection\.prune_ratio: applies only to strategy 'pruned'"),
        ({"strategy": "pruned", "prune_ratio": 1.0}, r"plugins\.selection\.prune_ratio"),
        ({"strategy": "prune"}, r"plugins\.selection\.strategy"),
    ],
)
def test_bad_pruning_settings_name_the_key(tiny_config, settings, message):
    with pytest.raises(hasten.UserError, match=message):
        Trainer(tiny_config(plugins={"selection": settings}))
