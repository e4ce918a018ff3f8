"""Hard Augment: exact argmax selection, vectorised = brute force, the plugin in a run."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import hasten
from hasten.engine import Trainer, train
from hasten.tasks.ssl import EXTRA_TARGETS
from hasten.tasks.ssl_losses import BYOLLoss, DINOLoss, Embeddings, MoCoLoss, NTXentLoss, SimSiamLoss
from hasten_hardaug.mining import gather_views, hardest_pairs, other_views, overhead_fraction, pair_table


def test_pair_table_is_all_pairs_in_order():
    assert pair_table(4).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert pair_table(6).shape == (15, 2)
    with pytest.raises(ValueError):
        pair_table(1)


def test_crafted_embeddings_select_the_known_hardest_pair():
    """SimSiam on unit vectors: views are identical except the two made opposite, per image."""
    m, n, d = 5, 3, 4
    hardest = [(1, 4), (0, 2), (3, 4)]
    base = torch.eye(d)[:n]  # image n's views all point along e_n...
    online = base[None].repeat(m, 1, 1).clone()
    for image, (i, j) in enumerate(hardest):
        online[i, image] = F.normalize(base[image] + 0.3 * torch.eye(d)[3], dim=0)
        online[j, image] = -online[i, image]  # ...except two opposite views: cosine -1, the largest loss
    losses = SimSiamLoss().all_pair_losses(Embeddings(online, online))
    best, first, second = hardest_pairs(losses, pair_table(m))
    assert list(zip(first.tolist(), second.tolist())) == hardest
    assert torch.equal(best, losses.argmax(dim=1))
    assert losses.max(dim=1).values.tolist() == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize("method", ["simsiam", "byol", "simclr", "mocov2plus", "dino"])
def test_random_batch_matches_brute_force_loops(method):
    generator = torch.Generator().manual_seed(7)
    m, n, d = 6, 9, 8
    online = torch.randn(m, n, d, generator=generator)
    target = online if method == "simclr" else torch.randn(m, n, d, generator=generator)
    loss = {
        "simsiam": SimSiamLoss(),
        "byol": BYOLLoss(),
        "simclr": NTXentLoss(0.5),
        "mocov2plus": MoCoLoss(0.2, F.normalize(torch.randn(16, d, generator=generator), dim=1)),
        "dino": DINOLoss(d, 0.1, 0.04, 0.9),
    }[method]
    _, first, second = hardest_pairs(loss.all_pair_losses(Embeddings(online, target)), pair_table(m))
    # Reference: every pair trained as the pair of its own (N-image) batch, then a loop over images.
    pair_loss = {
        (i, j): loss.pair_losses(Embeddings(online[i], target[i]), Embeddings(online[j], target[j]))
        for i, j in itertools.combinations(range(m), 2)
    }
    for image in range(n):
        best = max(pair_loss, key=lambda pair: pair_loss[pair][image].item())
        assert (first[image].item(), second[image].item()) == best


def test_gather_and_other_views():
    views = torch.arange(4 * 3).view(4, 3, 1).float()  # views[v, n] = 3 v + n
    first, second = torch.tensor([0, 2, 1]), torch.tensor([3, 3, 2])
    a, b = gather_views(views, first, second)
    assert a.flatten().tolist() == [0, 7, 5] and b.flatten().tolist() == [9, 10, 8]
    assert other_views(4, first, second).tolist() == [[1, 2], [0, 1], [0, 3]]


def test_overhead_formula_eq_3_11():
    assert overhead_fraction(224, 64, 4, 6) == pytest.approx(4 * 64**2 / (224**2 * 6 + 4 * 64**2))
    assert 0.05 < overhead_fraction(224, 64, 4, 6) < 0.053  # docs/methods.md: about 5%


def test_non_ssl_task_is_an_error(ssl_config):
    with pytest.raises(hasten.UserError, match=r"plugins\.hardaug.*task\.name: 'classification'"):
        Trainer(ssl_config(task={"name": "classification", "options": {}}))


def test_extra_targets_with_simclr_is_an_error(ssl_config):
    with pytest.raises(hasten.UserError, match=r"plugins\.hardaug\.extra_targets.*'simclr'"):
        Trainer(ssl_config("simclr", plugins={"hardaug": {"extra_targets": True}}))


def test_settings_are_validated(ssl_config):
    with pytest.raises(hasten.UserError, match=r"plugins\.hardaug\.num_views"):
        Trainer(ssl_config(plugins={"hardaug": {"num_views": 1}}))


def test_views_are_the_hardest_pair_of_m_augmentations(ssl_config):
    trainer = Trainer(ssl_config("byol"))
    state, task = trainer.state, trainer.state.task
    plugin = trainer.plugins.get("hardaug")
    images = state.data.train.__getitems__(list(range(8)))[0]
    batch = hasten.Batch(images=images, labels=torch.zeros(8, dtype=torch.long), indices=torch.arange(8))
    rng = state.generator.get_state()
    chosen = plugin.hasten_views(state=state, batch=batch)
    state.generator.set_state(rng)
    views = task.augment_views(state, images, 4)
    losses, _ = task.score_pairs(state, F.interpolate(views.flatten(0, 1), size=8, mode="bilinear",
                                                      antialias=True).view(4, 8, 3, 8, 8))
    best = losses.argmax(dim=1)
    pairs = pair_table(4)[best]
    for image in range(8):
        assert torch.equal(chosen[0][image], views[pairs[image, 0], image])
        assert torch.equal(chosen[1][image], views[pairs[image, 1], image])
    assert EXTRA_TARGETS not in batch.extras


def test_run_reports_mining_flops_and_stops_in_cooldown(ssl_config, tmp_path):
    result = train(ssl_config("simsiam", steps=3))
    state, task = result.state, result.state.task
    per_view = state.flops.forward_per_sample(task.model, (3, 8, 8))
    assert state.flops.overhead["hardaug"] == pytest.approx(3 * 4 * 8 * per_view)
    assert "hardaug/hardest_pair_loss" in result.metrics
    assert result.metrics["hardaug/hardest_pair_loss"] >= result.metrics["hardaug/mean_pair_loss"]

    class NoSampling(hasten.Plugin):
        name = "no_sampling"

        @hasten.hookimpl
        def hasten_sampling_active(self, state, step):
            return step < 1  # "cool-down" from step 1 on

    hasten.register_plugin(NoSampling)
    try:
        cooled = train(ssl_config("simsiam", steps=3, run={"run_dir": str(tmp_path / "cooled")},
                                  plugins={"no_sampling": {}, "hardaug": {"num_views": 4, "selection_resolution": 8}}))
    finally:
        hasten.plugins.unregister_plugin("no_sampling")
    assert cooled.state.flops.overhead["hardaug"] == pytest.approx(4 * 8 * per_view)  # step 0 only


@pytest.mark.parametrize("method", ["dino", "mocov2plus"])
def test_extra_targets_train(ssl_config, method):
    result = train(ssl_config(method, steps=2, plugins={"hardaug": {"num_views": 4, "selection_resolution": 8,
                                                                    "extra_targets": True}}))
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    # The momentum encoder's mining forwards are part of the mining overhead.
    state, task = result.state, result.state.task
    per_view = task.scoring_flops_per_view(state.flops, 8)
    assert per_view > state.flops.forward_per_sample(task.model, (3, 8, 8))
    assert state.flops.overhead["hardaug"] == pytest.approx(2 * 4 * 8 * per_view)
