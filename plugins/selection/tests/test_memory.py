"""The per-sample loss memory (pure tensor logic): known values, ranking, freshness, merging."""

from __future__ import annotations

import math

import pytest
import torch

from hasten_selection import select
from hasten_selection.memory import NEVER, LossMemory, merge_scores


def filled() -> LossMemory:
    """Slots 0..7; samples 1, 3, 5, 6 trained at steps 2, 2, 5, 6 with losses 0.5, 2.0, 0.1, 1.0."""
    memory = LossMemory(8)
    memory.remember(torch.tensor([1, 3]), torch.tensor([0.5, 2.0]), step=2)
    memory.remember(torch.tensor([5]), torch.tensor([0.1]), step=5)
    memory.remember(torch.tensor([6]), torch.tensor([1.0], dtype=torch.bfloat16), step=6)
    return memory


def test_empty_memory_has_seen_nothing():
    memory = LossMemory(4)
    assert len(memory) == 4
    assert memory.step.tolist() == [NEVER] * 4
    assert memory.recall(torch.arange(4)).tolist() == [math.inf] * 4
    assert memory.ages(torch.arange(4), step=10).tolist() == [-1] * 4
    assert not memory.fresh(torch.arange(4), step=10, max_age=1000).any()
    with pytest.raises(ValueError, match="at least one slot"):
        LossMemory(0)


def test_recall_ages_and_freshness_known_values():
    memory = filled()
    candidates = torch.tensor([0, 1, 3, 5, 6])
    assert memory.recall(candidates).tolist() == [math.inf, 0.5, 2.0, pytest.approx(0.1), 1.0]
    assert memory.recall(candidates).dtype == torch.float32
    assert memory.ages(candidates, step=7).tolist() == [-1, 5, 5, 2, 1]
    assert memory.fresh(candidates, step=7, max_age=2).tolist() == [False, False, False, True, True]
    assert memory.fresh(candidates, step=7, max_age=5).tolist() == [False, True, True, True, True]
    assert memory.fresh(candidates, step=7, max_age=0).tolist() == [False] * 5


def test_a_later_visit_overwrites_loss_and_step():
    memory = filled()
    memory.remember(torch.tensor([3, 0]), torch.tensor([0.25, 4.0]), step=9)
    assert memory.recall(torch.tensor([3, 0, 1])).tolist() == [0.25, 4.0, 0.5]
    assert memory.step.tolist() == [9, 2, NEVER, 9, NEVER, 5, 6, NEVER]


def test_greedy_on_the_memory_takes_never_seen_first_then_the_highest():
    losses = filled().recall(torch.tensor([5, 0, 1, 4, 3, 6]))  # 0.1, inf, 0.5, inf, 2.0, 1.0
    chosen = select(losses, 3, 1.0, torch.Generator().manual_seed(0), strategy="greedy")
    assert sorted(chosen.tolist()) == [1, 3, 4]  # the two never-seen, then the 2.0
    chosen = select(losses, 4, 1.0, torch.Generator().manual_seed(0), strategy="greedy")
    assert sorted(chosen.tolist()) == [1, 3, 4, 5]


def test_probabilistic_on_the_memory_prefers_never_seen_and_skips_the_lowest():
    """eq. 4.4 on the recalled losses: inclusion grows with the loss, never-seen rank highest, rank 0 never."""
    candidates = torch.tensor([5, 0, 1, 4, 3, 6])  # 0.1, inf, 0.5, inf, 2.0, 1.0
    losses = filled().recall(candidates).expand(20_000, -1)
    chosen = select(losses, 3, 1.0, torch.Generator().manual_seed(1))
    inclusion = torch.bincount(chosen.flatten(), minlength=6).double() / 20_000
    assert inclusion[0] == 0  # the lowest remembered loss (0.1)
    by_loss = [inclusion[i] for i in (2, 5, 4)]  # 0.5 < 1.0 < 2.0
    assert by_loss == sorted(by_loss)
    assert min(inclusion[1], inclusion[3]) > inclusion[4]  # never seen above the highest remembered
    assert float(inclusion.sum()) == pytest.approx(3)


def test_merge_takes_the_memory_where_fresh_and_the_scores_elsewhere():
    remembered = torch.tensor([0.3, math.inf, 0.7, 1.5])
    fresh = torch.tensor([True, False, True, False])
    stale = (~fresh).nonzero().squeeze(1)
    merged = merge_scores(remembered, fresh, stale, torch.tensor([2.5, 0.05], dtype=torch.float64))
    assert merged.tolist() == [pytest.approx(0.3), 2.5, pytest.approx(0.7), pytest.approx(0.05)]
    assert merged.dtype == torch.float32
    # Nothing stale: the memory as it is.
    all_fresh = torch.ones(4, dtype=torch.bool)
    assert torch.equal(merge_scores(remembered, all_fresh, torch.zeros(0, dtype=torch.long), torch.zeros(0)),
                       remembered)


def test_state_dict_round_trip_and_size_check():
    memory = filled()
    copy = LossMemory(8)
    copy.load_state_dict({k: v.clone() for k, v in memory.state_dict().items()})
    assert torch.equal(copy.loss, memory.loss) and torch.equal(copy.step, memory.step)
    with pytest.raises(ValueError, match="8 slots, this training set 5"):
        LossMemory(5).load_state_dict(memory.state_dict())
