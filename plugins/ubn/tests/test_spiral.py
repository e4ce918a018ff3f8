"""The spiral study at CI size: UBN beats BN on the dense held-out set; the diagnostics work."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from hasten.engine import train
from hasten.registry import REGISTRY
from hasten_ubn.diagnostics import feature_distances, mc_bn_predict


def test_spiral_dataset_contract() -> None:
    build = REGISTRY.datasets.get("spiral")
    train_set = build(split="train", resolution=1, seed=0)
    unlabeled = build(split="unlabeled", resolution=1, seed=0)
    val = build(split="val", resolution=1, seed=0)
    assert (len(train_set), len(unlabeled), len(val)) == (50, 400, 2000)
    assert train_set.images.dtype == torch.float32 and train_set.images.shape[1] == 2
    assert train_set.source_resolution == 0 and train_set.channels == 2
    assert torch.bincount(train_set.labels).tolist() == [25, 25]
    assert bool((unlabeled.labels == -1).all()) and torch.bincount(unlabeled.hidden_labels).tolist() == [200, 200]
    # Independent draws per split and seed; the same draw again for the same seed.
    assert not torch.equal(train_set.images, val.images[:50])
    assert torch.equal(train_set.images, build(split="train", resolution=1, seed=0).images)
    assert float(val.images.abs().max()) < 1.3


def test_ubn_beats_bn_on_the_dense_held_out_set(spiral_config, tmp_path) -> None:
    """3 seeds (fixed) x {BN, UBN two_step}; measured: BN 0.673/0.720/0.701, UBN 0.701/0.777/0.804."""
    bn, ubn = [], []
    for seed in range(3):
        bn.append(train(spiral_config(run={"seed": seed, "run_dir": str(tmp_path / f"bn{seed}")})).metrics["val/acc1"])
        ubn.append(train(spiral_config(run={"seed": seed, "run_dir": str(tmp_path / f"ubn{seed}")},
                                       plugins={"ubn": {}})).metrics["val/acc1"])
    assert statistics.median(ubn) - statistics.median(bn) >= 0.04, (bn, ubn)
    assert all(u > b for u, b in zip(ubn, bn, strict=True)), (bn, ubn)


def test_feature_distances_separate_shifted_distributions() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(4)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, -1.0]]))
        model[0].bias.zero_()
    same_l, same_u = torch.randn(500, 2), torch.randn(2000, 2)
    shifted_u = torch.randn(2000, 2) + torch.tensor([1.5, 0.0])
    # alpha 0.001: two draws of one distribution reject with probability 0.001 per feature.
    (same,) = feature_distances(model, [same_l], [same_u], alpha=0.001)
    (shifted,) = feature_distances(model, [same_l], [shifted_u], alpha=0.001)
    assert same.layer == "1" and same.features == 4
    # Features 0 and 2 are multiples of x0 (shifted), 1 and 3 of x1 (not shifted).
    assert shifted.ks_fraction == 0.5 and same.ks_fraction == 0.0
    assert shifted.wasserstein > 3 * shifted.wasserstein_uu
    assert shifted.kl > same.kl and shifted.reverse_kl > same.reverse_kl
    assert same.pearson > 0.9 > shifted.pearson


def test_mc_bn_spread_is_zero_for_identical_batches_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    before = model[1].running_mean.clone()
    batch = torch.randn(32, 2)
    inputs = torch.randn(10, 2)
    mean, spread = mc_bn_predict(model, inputs, [batch, batch])
    assert float(spread.max()) == 0.0 and torch.allclose(mean.sum(1), torch.ones(10))
    _, spread = mc_bn_predict(model, inputs, [torch.randn(8, 2) * s for s in (0.5, 1.0, 2.0)])
    assert float(spread.mean()) > 1e-3
    assert torch.equal(model[1].running_mean, before) and model.training


def test_mc_bn_auroc_has_the_known_answers() -> None:
    from hasten_ubn.diagnostics import auroc

    # the classic example: of the 4 (positive, negative) pairs, 3 are ordered right
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert auroc(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert auroc(torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert auroc(torch.full((6,), 0.3), torch.tensor([0, 1, 0, 1, 1, 0])) == 0.5  # ties count one half
    # one tie across the classes (0.2 vs 0.2) of 2 x 2 pairs: (3 + 0.5) / 4
    assert auroc(torch.tensor([0.2, 0.1, 0.2, 0.5]), torch.tensor([0, 0, 1, 1])) == 0.875
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


def test_mc_bn_uncertainty_scores_the_predicted_class_spread_against_correctness() -> None:
    from hasten_ubn.diagnostics import mc_bn_uncertainty

    mean = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    std = torch.tensor([[0.01, 0.5], [0.0, 0.02], [0.3, 0.0], [0.0, 0.2]])
    labels = torch.tensor([0, 1, 1, 0])  # the last two predictions are wrong, and have the larger spreads
    summary = mc_bn_uncertainty(mean, std, labels, passes=5)
    assert (summary.samples, summary.passes, summary.wrong, summary.accuracy) == (4, 5, 2, 0.5)
    assert summary.std_correct == pytest.approx(0.015) and summary.std_wrong == pytest.approx(0.25)
    assert summary.auroc_wrong == 1.0
