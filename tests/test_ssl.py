"""The ssl task: losses against hand-written formulas, schedules, kNN, state, FLOPs, and short trainings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import hasten
from hasten.checkpoint import latest_checkpoint, load_checkpoint
from hasten.engine import Trainer, train
from hasten.tasks.ssl import SSLTask, weighted_knn_predict
from hasten.tasks.ssl_losses import (
    BYOLLoss,
    DINOLoss,
    Embeddings,
    MoCoLoss,
    NTXentLoss,
    SimSiamLoss,
    cosine_schedule_tau,
    pair_index,
)


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _fixed(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------- loss formulas
def test_simsiam_is_symmetric_negative_cosine_with_stop_gradient():
    p1, p2, z1, z2 = (_fixed(3, 4, s) for s in range(4))
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    p1.requires_grad_(True)
    ours = SimSiamLoss().pair_losses(Embeddings(p1, z1), Embeddings(p2, z2))
    for n in range(3):
        expected = -0.5 * _cos(p1[n].tolist(), z2[n].tolist()) - 0.5 * _cos(p2[n].tolist(), z1[n].tolist())
        assert ours[n].item() == pytest.approx(expected, abs=1e-12)
    ours.sum().backward()
    assert z1.grad is None and z2.grad is None  # targets are stop-gradient
    assert p1.grad is not None and p1.grad.abs().sum() > 0


def test_byol_is_summed_normalised_squared_distance():
    p1, p2, t1, t2 = (_fixed(3, 5, s) for s in range(10, 14))
    ours = BYOLLoss().pair_losses(Embeddings(p1, t1), Embeddings(p2, t2))
    for n in range(3):

        def dist(p: torch.Tensor, z: torch.Tensor) -> float:
            pn = [v / math.sqrt(sum(x * x for x in p.tolist())) for v in p.tolist()]
            zn = [v / math.sqrt(sum(x * x for x in z.tolist())) for v in z.tolist()]
            return sum((a - b) ** 2 for a, b in zip(pn, zn))

        expected = dist(p1[n], t2[n]) + dist(p2[n], t1[n])
        assert ours[n].item() == pytest.approx(expected, abs=1e-12)


def test_ntxent_temperature_half_on_a_four_sample_batch_by_hand():
    # Two images, two views each: four embeddings, already unit length.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.6, 0.8], [0.8, -0.6]], dtype=torch.float64)
    ours = NTXentLoss(temperature=0.5).pair_losses(Embeddings(a, a), Embeddings(b, b))
    # Anchors in order a0, a1, b0, b1; positives a0<->b0, a1<->b1; exp(sim / 0.5).
    e = math.exp
    # a0: sims to a1 0, b0 0.6, b1 0.8
    l_a0 = -math.log(e(0.6 / 0.5) / (e(0.0) + e(0.6 / 0.5) + e(0.8 / 0.5)))
    # a1: sims to a0 0, b0 0.8, b1 -0.6
    l_a1 = -math.log(e(-0.6 / 0.5) / (e(0.0) + e(0.8 / 0.5) + e(-0.6 / 0.5)))
    # b0: sims to a0 0.6, a1 0.8, b1 0.6*0.8 + 0.8*-0.6 = 0
    l_b0 = -math.log(e(0.6 / 0.5) / (e(0.6 / 0.5) + e(0.8 / 0.5) + e(0.0)))
    # b1: sims to a0 0.8, a1 -0.6, b0 0
    l_b1 = -math.log(e(-0.6 / 0.5) / (e(0.8 / 0.5) + e(-0.6 / 0.5) + e(0.0)))
    assert ours.tolist() == pytest.approx([(l_a0 + l_b0) / 2, (l_a1 + l_b1) / 2], abs=1e-12)
    assert ours.mean().item() == pytest.approx((l_a0 + l_a1 + l_b0 + l_b1) / 4, abs=1e-12)  # NT-Xent itself


def test_moco_symmetric_infonce_with_queue():
    q1, q2, k1, k2 = (_fixed(2, 3, s) for s in range(20, 24))
    queue = F.normalize(_fixed(5, 3, 30), dim=1)
    temperature = 0.2
    ours = MoCoLoss(temperature, queue).pair_losses(Embeddings(q1, k1), Embeddings(q2, k2))

    def infonce(q: torch.Tensor, k: torch.Tensor) -> float:
        positive = math.exp(_cos(q.tolist(), k.tolist()) / temperature)
        negatives = sum(math.exp(_cos(q.tolist(), row.tolist()) / temperature) for row in queue)
        return -math.log(positive / (positive + negatives))

    for n in range(2):
        expected = 0.5 * (infonce(q1[n], k2[n]) + infonce(q2[n], k1[n]))
        assert ours[n].item() == pytest.approx(expected, abs=1e-10)


def test_moco_queue_is_a_ring_buffer():
    queue = torch.zeros(5, 2)
    loss = MoCoLoss(0.2, queue)
    loss.enqueue(torch.tensor([[1.0, 0.0]] * 3))
    loss.enqueue(torch.tensor([[0.0, 2.0]] * 3))
    assert loss.queue.tolist() == [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    assert int(loss.pointer) == 1


def test_dino_cross_entropy_with_centering_and_temperatures():
    s1, s2, t1, t2 = (_fixed(2, 4, s) for s in range(40, 44))
    loss = DINOLoss(out_dim=4, student_temperature=0.1, teacher_temperature=0.04, center_momentum=0.9)
    loss.center = torch.tensor([[0.3, -0.2, 0.1, 0.5]], dtype=torch.float64)
    center = loss.center[0].tolist()
    ours = loss.pair_losses(Embeddings(s1, t1), Embeddings(s2, t2))

    def softmax(values: list[float]) -> list[float]:
        top = max(values)
        exps = [math.exp(v - top) for v in values]
        return [x / sum(exps) for x in exps]

    def h(teacher: torch.Tensor, student: torch.Tensor) -> float:
        pt = softmax([(v - c) / 0.04 for v, c in zip(teacher.tolist(), center)])
        ps = softmax([v / 0.1 for v in student.tolist()])
        return -sum(a * math.log(b) for a, b in zip(pt, ps))

    for n in range(2):
        assert ours[n].item() == pytest.approx(0.5 * (h(t2[n], s1[n]) + h(t1[n], s2[n])), abs=1e-9)
    loss.update_center(torch.stack([t1, t2]))
    expected_center = [0.9 * c + 0.1 * torch.cat([t1, t2])[:, k].mean().item() for k, c in enumerate(center)]
    assert loss.center[0].tolist() == pytest.approx(expected_center, abs=1e-12)


def _losses() -> dict[str, object]:
    return {
        "simsiam": SimSiamLoss(),
        "byol": BYOLLoss(),
        "simclr": NTXentLoss(0.3),
        "mocov2plus": MoCoLoss(0.2, F.normalize(_fixed(7, 6, 50), dim=1)),
        "dino": DINOLoss(6, 0.1, 0.05, 0.9),
    }


@pytest.mark.parametrize("method", ["simsiam", "byol", "simclr", "mocov2plus", "dino"])
def test_all_pair_losses_match_pair_losses(method):
    loss = _losses()[method]
    m, n = 5, 4
    online, target = _fixed(m * n, 6, 60).view(m, n, 6), _fixed(m * n, 6, 61).view(m, n, 6)
    if method == "simclr":
        target = online
    table = loss.all_pair_losses(Embeddings(online, target))
    assert table.shape == (n, 10)
    for column, (i, j) in enumerate(pair_index(m).tolist()):
        reference = loss.pair_losses(Embeddings(online[i], target[i]), Embeddings(online[j], target[j]))
        assert table[:, column].tolist() == pytest.approx(reference.tolist(), abs=1e-10)


# ------------------------------------------------------------- schedules, kNN
def test_cosine_momentum_schedule():
    assert cosine_schedule_tau(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_schedule_tau(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_schedule_tau(100, 100, 0.996) == pytest.approx(1.0)


def test_weighted_knn_votes():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 1])
    query = F.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.9, 0.3]]), dim=1)
    assert weighted_knn_predict(query, bank, labels, 2, k=2, temperature=0.1).tolist() == [0, 1, 0]
    # k = 5 (the whole bank): class weight sum_i exp(cos_i / T) decides, not the neighbour count.
    for point, temperature in (([0.7, 0.7], 0.1), ([0.8, 0.6], 0.1), ([0.8, 0.6], 10.0)):
        q = F.normalize(torch.tensor([point]), dim=1)
        weights = [math.exp(_cos(point, row.tolist()) / temperature) for row in bank]
        expected = int(sum(weights[2:]) > sum(weights[:2]))
        assert weighted_knn_predict(q, bank, labels, 2, k=5, temperature=temperature).item() == expected
    # A point nearer class 0 but outnumbered: a high temperature flattens the weights and the majority wins.
    q = F.normalize(torch.tensor([[0.8, 0.6]]), dim=1)
    assert weighted_knn_predict(q, bank, labels, 2, k=5, temperature=0.05).item() == 0
    assert weighted_knn_predict(q, bank, labels, 2, k=5, temperature=10.0).item() == 1


# ------------------------------------------------------------------ the task
def ssl_config(tiny_config, method: str, steps: int = 4, **sections):
    options = {"method": method, "knn_k": 20, "knn_bank_size": 256}
    options.update(sections.pop("task_options", {}))
    if method == "mocov2plus":
        options.setdefault("queue_size", 256)
    if method == "dino":
        options.setdefault("out_dim", 256)
    return tiny_config(
        run={"max_steps": steps, **sections.pop("run", {})},
        task={"name": "ssl", "options": options},
        **sections,
    )


def test_unused_option_is_an_error(tiny_config):
    with pytest.raises(hasten.UserError, match=r"task\.options\.temperature: not used by method 'simsiam'"):
        Trainer(ssl_config(tiny_config, "simsiam", task_options={"temperature": 0.5}))


def test_heads_scale_with_the_backbone(tiny_config):
    task = Trainer(ssl_config(tiny_config, "byol")).state.task
    assert task.num_features == 64  # small_resnet width 8
    assert task.settings["proj_hidden_dim"] == 512 and task.settings["proj_output_dim"] == 32
    assert task.momentum_encoder is not None
    optimized = {id(p) for group in Trainer(ssl_config(tiny_config, "byol")).state.optimizer.param_groups
                 for p in group["params"]}
    assert not optimized & {id(p) for p in task.momentum_encoder.parameters()}


def test_dino_head_batchnorm_follows_the_backbone(tiny_config):
    def head_norms(**sections) -> int:
        task = Trainer(ssl_config(tiny_config, "dino", **sections)).state.task
        return sum(isinstance(m, torch.nn.BatchNorm1d) for m in task.model.projector.modules())

    assert head_norms() == 2  # small_resnet has BatchNorm: after both hidden layers
    assert head_norms(task_options={"head_batchnorm": False}) == 0
    vit = {"name": "vit_tiny", "options": {"patch_size": 4, "ref_resolution": 16}}
    assert head_norms(model=vit) == 0  # DINO's published ViT head
    with pytest.raises(hasten.UserError, match=r"task\.options\.head_batchnorm: not used by method 'byol'"):
        Trainer(ssl_config(tiny_config, "byol", task_options={"head_batchnorm": True}))


def test_momentum_update_and_flops(tiny_config):
    trainer = Trainer(ssl_config(tiny_config, "byol", steps=1))
    state, task = trainer.state, trainer.state.task
    before = [p.detach().clone() for p in task.momentum_encoder.parameters()]
    result = trainer.fit()
    tau = cosine_schedule_tau(0, 1, 0.996)
    online = [*task.model.backbone.parameters(), *task.model.projector.parameters()]
    for old, new, current in zip(before, task.momentum_encoder.parameters(), online):
        assert torch.allclose(new, tau * old + (1 - tau) * current, atol=1e-6)
    shape = (3, 16, 16)
    per_sample = 2 * state.flops.forward_per_sample(task.model, shape)
    assert result.metrics["flops/train"] == pytest.approx(3 * per_sample * 16)
    momentum = 2 * 16 * state.flops.forward_per_sample(task.momentum_encoder, shape)
    assert result.metrics["flops/overhead/momentum_encoder"] == pytest.approx(momentum)
    knn = (256 + 64) * state.flops.forward_per_sample(task.model.backbone, shape)
    assert state.flops.overhead["knn"] == pytest.approx(knn)  # one evaluation, at the end


@pytest.mark.parametrize("method", ["mocov2plus", "dino"])
def test_scoring_pass_changes_no_state(tiny_config, method):
    trainer = Trainer(ssl_config(tiny_config, method))
    state, task = trainer.state, trainer.state.task
    trainer.fit()  # buffers away from their initial values
    snapshot = {**{f"m.{k}": v.clone() for k, v in task.model.state_dict().items()},
                **{f"t.{k}": v.clone() for k, v in task.state_dict().items() if torch.is_tensor(v)},
                **{f"e.{k}": v.clone() for k, v in task.momentum_encoder.state_dict().items()}}
    images = state.data.train.__getitems__(list(range(8)))[0]
    views = task.augment_views(state, images, 4)
    losses, targets = task.score_pairs(state, views)
    assert losses.shape == (8, 6) and targets.shape[:2] == (4, 8)
    after = {**{f"m.{k}": v for k, v in task.model.state_dict().items()},
             **{f"t.{k}": v for k, v in task.state_dict().items() if torch.is_tensor(v)},
             **{f"e.{k}": v for k, v in task.momentum_encoder.state_dict().items()}}
    for key, value in snapshot.items():
        assert torch.equal(value, after[key]), key
    assert task.model.training and task.momentum_encoder.training


def test_resume_restores_momentum_encoder_and_queue(tiny_config, tmp_path):
    run = {"run_dir": str(tmp_path / "b"), "checkpoint_every": 3}
    first = train(ssl_config(tiny_config, "mocov2plus", steps=6, run=run))
    blob = load_checkpoint(latest_checkpoint(tmp_path / "b"))
    assert set(blob["task"]) == {"momentum_encoder", "queue", "queue_pointer"}
    # Restart from step 3: the last three losses must repeat exactly (queue and momentum encoder restored).
    (tmp_path / "b" / "checkpoints" / "step-000000006.pt").unlink()
    resumed = train(ssl_config(tiny_config, "mocov2plus", steps=6, run=run), resume=True)
    assert resumed.losses == pytest.approx(first.losses[3:], abs=1e-6)


def test_views_are_two_independent_augmentations(tiny_config):
    trainer = Trainer(ssl_config(tiny_config, "simsiam"))
    state, task = trainer.state, trainer.state.task
    assert isinstance(task, SSLTask) and task.num_views == 2
    images = state.data.train.__getitems__(list(range(4)))[0]
    batch = hasten.Batch(images=images, labels=torch.zeros(4, dtype=torch.long), indices=torch.arange(4))
    first, second = task.views(state, batch)
    assert first.shape == second.shape == (4, 3, 16, 16)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("method", ["simsiam", "byol", "mocov2plus", "dino"])
def test_extra_targets_loss_is_the_mean_of_all_terms(method):
    loss = _losses()[method]
    online, target = _fixed(2 * 3, 6, 70).view(2, 3, 6), _fixed(2 * 3, 6, 71).view(2, 3, 6)
    extra = _fixed(4 * 3, 6, 72).view(4, 3, 6)
    pair = loss.pair_losses(Embeddings(online[0], target[0]), Embeddings(online[1], target[1]))
    none = loss.extra_target_losses(Embeddings(online, target), extra[:0])
    assert none.tolist() == pytest.approx(pair.tolist(), abs=1e-12)
    terms = [loss.term(online[0], target[1]), loss.term(online[1], target[0])]
    terms += [loss.term(online[v], extra[k]) for v in range(2) for k in range(4)]
    expected = 2 * loss.scale * torch.stack(terms).mean(0)
    ours = loss.extra_target_losses(Embeddings(online, target), extra)
    assert ours.tolist() == pytest.approx(expected.tolist(), abs=1e-12)


# ---------------------------------------------------------------- linear probe
def test_linear_layer_separates_separable_features():
    from hasten.commands.linear_probe import train_linear

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 3
    labels = torch.arange(200) % 4
    features = centres[labels] + torch.randn(200, 16, generator=generator)
    layer = train_linear(features, labels, 4, epochs=20, lr=0.1, batch_size=32, seed=0)
    assert layer(features).argmax(1).eq(labels).float().mean().item() > 0.97


def test_linear_probe_command(tiny_config, tmp_path, capsys):
    import re

    import yaml

    from hasten.cli import main

    config = ssl_config(tiny_config, "simsiam", steps=2, run={"checkpoint_every": 2})
    train(config)
    checkpoint = latest_checkpoint(config.run.run_dir)
    path = tmp_path / "ssl.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["linear-probe", str(path), "--checkpoint", str(checkpoint), "--epochs", "5"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(re.search(r"linear probe top-1: ([0-9.]+)", printed).group(1))
    assert 0.0 <= accuracy <= 1.0 and "checkpoint step 2" in printed
    # A checkpoint of another model is refused with the flag named.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**config.model_dump(mode="json"), "model": {"name": "small_resnet",
                                                                                "options": {"width": 4}}}))
    assert main(["linear-probe", str(other), "--checkpoint", str(checkpoint)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------ short trainings
#: Each method trains on the embedded procedural scenes painted in fixed grey levels (data option
#: ``colours: fixed``): with random colours the background and object colours identify every image
#: through any colour jitter, and a short run learns that shortcut instead of the shapes (SimSiam, 200
#: steps: kNN 0.12 with random colours, 0.39 fixed; docs/ssl.md). Short-run settings: the momentum
#: methods start at tau 0.99 and BYOL/MoCo train at lr 0.2 (measured on this size: BYOL 0.31 at 0.1 vs
#: 0.38 at 0.2, MoCo 0.28 vs 0.32). Chance is 0.10; the random backbone scores 0.24 (the shapes differ
#: in their pixels), so the test asks for both: well above chance, and a gain over the untrained network.
LEARN_STEPS = 200
LEARN_LR = {"simsiam": 0.1, "byol": 0.2, "simclr": 0.1, "mocov2plus": 0.2, "dino": 0.1}
LEARN_MIN_KNN = 0.27
LEARN_MIN_GAIN = 0.05


@pytest.mark.parametrize("method", ["simsiam", "byol", "simclr", "mocov2plus", "dino"])
def test_each_method_learns(tiny_config, method):
    options: dict[str, object] = {"knn_k": 20, "knn_bank_size": None}
    if method in ("byol", "dino"):
        options["tau_base"] = 0.99
    if method == "mocov2plus":
        options["queue_size"] = 1024
    config = ssl_config(
        tiny_config, method, steps=LEARN_STEPS,
        run={"log_every": 50},
        data={"resolution": 24, "batch_size": 128,
              "options": {"train_size": 1024, "val_size": 512, "colours": "fixed"}},
        model={"name": "small_resnet", "options": {"width": 16}},
        optim={"lr": LEARN_LR[method]},
        eval={"every_steps": 10**6, "batch_size": 512},
        task_options=options,
    )
    trainer = Trainer(config)
    untrained = trainer.state.task.evaluate(trainer.state)["knn/acc1"]
    trained = trainer.fit().metrics["knn/acc1"]
    assert trained > LEARN_MIN_KNN and trained - untrained > LEARN_MIN_GAIN, (untrained, trained)
