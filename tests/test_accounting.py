"""FLOP accounting: fvcore counts, the training-step convention, overhead reporting."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import hasten
from hasten.accounting import BACKWARD_FACTOR, FlopAccountant, count_forward_flops
from hasten.engine import train
from hasten.plugins import register_plugin, unregister_plugin


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_fvcore_resnet18_is_half_of_torch_flop_counter(resolution: int) -> None:
    """fvcore counts a multiply-add as one FLOP, torch's counter as two."""
    model = torchvision.models.resnet18(num_classes=1000).eval()
    example = torch.zeros(1, 3, resolution, resolution)
    ours = count_forward_flops(model, example)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    theirs = counter.get_total_flops() / 2
    assert ours == pytest.approx(theirs, rel=0.02)
    # ResNet-18 costs 1.82 GMACs at 224 px, so about 1.82e9 * (r / 224)^2 here.
    assert ours == pytest.approx(1.82e9 * (resolution / 224) ** 2, rel=0.1)


def test_forward_count_is_cached_and_leaves_the_module_untouched() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    accountant = FlopAccountant()
    first = accountant.forward_per_sample(model, (3, 16, 16))
    conv_macs = 3 * 8 * 9 * 16 * 16
    assert accountant.forward_per_sample(model[0], (3, 16, 16)) == conv_macs
    assert conv_macs < first <= conv_macs + 4 * 8 * 16 * 16  # plus a few per element for batch-norm
    assert accountant.forward_per_sample(model, (3, 16, 16)) == first
    assert len(accountant._cache) == 2  # counted once per (module, shape)
    assert accountant.forward_per_sample(model, (3, 8, 8)) == pytest.approx(first / 4)
    assert model.training  # mode restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no BN statistics update


def test_train_overhead_total_and_state_roundtrip() -> None:
    accountant = FlopAccountant()
    assert BACKWARD_FACTOR == 2.0
    accountant.add_train(accountant.train_step_flops(100.0, 8))
    accountant.add_overhead("selection", 50.0)
    accountant.add_overhead("selection", 25.0)
    accountant.add_overhead("ema", 10.0)
    assert accountant.metrics() == {
        "flops/train": 2400.0,
        "flops/overhead": 85.0,
        "flops/total": 2485.0,
        "flops/overhead/selection": 75.0,
        "flops/overhead/ema": 10.0,
    }
    restored = FlopAccountant()
    restored.load_state_dict(accountant.state_dict())
    assert restored.metrics() == accountant.metrics()


class ExtraForward(hasten.Plugin):
    """Reports one extra forward of every trained sample, as a scoring pass would."""

    name = "extra_forward"

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        per_sample = state.task.forward_flops_per_sample(state.flops, state.resolution)
        state.flops.add_overhead(self.name, per_sample * output.num_samples)


def test_run_counts_three_forwards_per_trained_sample_plus_reported_overhead(tiny_config) -> None:
    register_plugin(ExtraForward)
    try:
        result = train(tiny_config(run={"max_steps": 5}, plugins={"extra_forward": None}))
    finally:
        unregister_plugin(ExtraForward.name)
    state = result.state
    forward = count_forward_flops(state.model, torch.zeros(1, 3, 16, 16))
    samples = 5 * 16
    assert result.metrics["flops/train"] == pytest.approx(3 * forward * samples)
    assert result.metrics["flops/overhead/extra_forward"] == pytest.approx(forward * samples)
    assert result.metrics["flops/overhead"] == pytest.approx(forward * samples)
    assert result.metrics["flops/total"] == pytest.approx(4 * forward * samples)


def test_vit_attention_is_counted():
    """fvcore has no handle for fused attention; ours adds Q K^T and A V."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hasten.accounting import count_forward_flops
    from hasten.models import build_model

    model = build_model("vit_tiny", num_classes=10, in_channels=3, options={}).eval()
    image = torch.zeros(1, 3, 32, 32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image)
    reference = counter.get_total_flops() / 2
    counted = count_forward_flops(model, image)
    # fvcore also counts norms and activations, which torch's counter skips: a few percent more.
    assert reference <= counted <= 1.15 * reference
