"""UBN's two forwards against hand-written computations (docs/methods.md section 1)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hasten_ubn.ubn import UBNModel, batch_moments, find_batchnorm, joint_forward, two_step_forward


def one_layer(features: int = 3, conv: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(features) if conv else nn.BatchNorm1d(features))
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        model[0].weight.copy_(torch.tensor([1.5, -0.5, 2.0][:features]))
        model[0].bias.copy_(torch.tensor([0.1, 0.2, -0.3][:features]))
        model[0].running_mean.copy_(torch.tensor([0.3, -0.2, 0.5][:features]))
        model[0].running_var.copy_(torch.tensor([2.0, 0.5, 1.5][:features]))
    return model.train()


@pytest.mark.parametrize("conv", [False, True])
def test_two_step_normalises_with_the_combined_batch_statistics(conv: bool) -> None:
    model = one_layer(conv=conv)
    bn = model[0]
    shape = (5, 3, 4, 4) if conv else (5, 3)
    x = (torch.randn(shape) * 2 + 1).requires_grad_(True)
    y = torch.randn((7, *shape[1:])) * 0.5 - 2  # a shifted unlabeled distribution
    old_mean, old_var = bn.running_mean.clone(), bn.running_var.clone()

    out = two_step_forward(model, x, y, *find_batchnorm(model))

    combined = torch.cat([x.detach(), y])
    dims = [0, 2, 3] if conv else [0]
    view = (1, 3, 1, 1) if conv else (1, 3)
    mean = combined.mean(dims)
    var = combined.var(dims, unbiased=False)
    manual = bn.weight.view(view) * (x.detach() - mean.view(view)) / torch.sqrt(var.view(view) + bn.eps)
    manual = manual + bn.bias.view(view)
    assert torch.allclose(out, manual, atol=1e-5)
    # The labeled batch's own statistics differ a lot: the test can tell them apart.
    assert (x.detach().mean(dims) - mean).abs().min() > 0.5

    # Running statistics: exactly one combined-batch update (momentum 0.1, unbiased variance).
    count = combined.numel() // 3
    assert torch.allclose(bn.running_mean, 0.9 * old_mean + 0.1 * mean, atol=1e-6)
    assert torch.allclose(bn.running_var, 0.9 * old_var + 0.1 * var * count / (count - 1), atol=1e-5)
    assert int(bn.num_batches_tracked) == 1

    # No gradient through the statistics: d out / d x is gamma / sigma(n), elementwise.
    out.sum().backward()
    expected = (bn.weight / torch.sqrt(var + bn.eps)).view(view).expand_as(x)
    assert torch.allclose(x.grad, expected, atol=1e-5)
    # With gradients through the statistics (standard BN), d sum(out) / d x would be 0.
    assert expected.abs().min() > 0.1


def test_two_step_leaves_unselected_layers_as_standard_batchnorm() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 4), nn.BatchNorm1d(4))
    reference = copy.deepcopy(model)
    x, y = torch.randn(6, 2), torch.randn(9, 2) + 3
    selected, others = find_batchnorm(model, ["4"])
    assert [n for n, _ in selected] == ["4"] and [n for n, _ in others] == ["1"]
    two_step_forward(model, x, y, selected, others)
    reference(x)  # standard BN on the labeled batch
    assert torch.allclose(model[1].running_mean, reference[1].running_mean, atol=1e-6)
    assert torch.allclose(model[1].running_var, reference[1].running_var, atol=1e-6)
    assert not torch.allclose(model[4].running_mean, reference[4].running_mean, atol=1e-3)


def test_joint_gradients_equal_a_manual_masked_loss_forward() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    x, y = torch.randn(6, 2), torch.randn(10, 2) * 2
    labels = torch.randint(0, 3, (6,))

    loss = F.cross_entropy(joint_forward(model, x, y), labels)
    loss.backward()

    logits = twin(torch.cat([x, y]))
    mask = torch.cat([torch.ones(6), torch.zeros(10)])
    padded = torch.cat([labels, torch.zeros(10, dtype=torch.long)])
    manual = (F.cross_entropy(logits, padded, reduction="none") * mask).sum() / mask.sum()
    manual.backward()

    assert loss.item() == pytest.approx(manual.item(), abs=1e-6)
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-6)
    assert torch.allclose(model[1].running_mean, twin[1].running_mean)
    # Gradients do flow through the combined statistics: the first layer's weight gets a
    # different gradient than with the statistics held constant (two_step).
    other = copy.deepcopy(twin)
    other.zero_grad()
    F.cross_entropy(two_step_forward(other, x, y, *find_batchnorm(other)), labels).backward()
    assert not torch.allclose(other[0].weight.grad, twin[0].weight.grad, atol=1e-4)


def test_joint_unselected_layers_use_labeled_statistics() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.BatchNorm1d(3))
    x, y = torch.randn(5, 3), torch.randn(8, 3) + 4
    out = joint_forward(model, x, y, find_batchnorm(model, ["nothing"])[1])
    assert torch.allclose(out, F.batch_norm(x, None, None, model[0].weight, model[0].bias, True), atol=1e-5)
    mean, _ = batch_moments(x)
    assert torch.allclose(model[0].running_mean, 0.1 * mean, atol=1e-6)


def test_wrapper_consumes_one_unlabeled_batch_per_forward() -> None:
    model = one_layer()
    wrapper = UBNModel(model, "two_step", *find_batchnorm(model))
    wrapper.set_unlabeled(torch.randn(4, 3))
    wrapper(torch.randn(3, 3))
    with pytest.raises(RuntimeError, match="no unlabeled inputs"):
        wrapper(torch.randn(3, 3))
    # The override is removed after the step: plain BN again.
    assert "forward" not in model[0].__dict__


@pytest.mark.parametrize("conv", [False, True])
def test_two_step_grad_values_equal_two_step_and_gradients_flow_through_the_labeled_share(conv: bool) -> None:
    from hasten_ubn.ubn import two_step_grad_forward

    shape = (5, 3, 4, 4) if conv else (5, 3)
    torch.manual_seed(1)
    x0 = torch.randn(shape) * 2 + 1
    y = torch.randn((7, *shape[1:])) * 0.5 - 2
    weights = torch.randn(shape)  # a loss that is not the plain sum (whose BN gradient would vanish)

    reference = one_layer(conv=conv)
    x_ref = x0.clone().requires_grad_(True)
    expected_out = two_step_forward(reference, x_ref, y, *find_batchnorm(reference))

    model = one_layer(conv=conv)
    bn = model[0]
    x = x0.clone().requires_grad_(True)
    out = two_step_grad_forward(model, x, y, *find_batchnorm(model))
    assert torch.allclose(out, expected_out, atol=1e-5)  # same values as two_step
    # same running statistics update (one combined-batch update)
    assert torch.allclose(bn.running_mean, reference[0].running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, reference[0].running_var, atol=1e-6)

    (out * weights).sum().backward()
    # manual: normalise with statistics of [x; y.detach()], autograd through x's share only
    xm = x0.clone().requires_grad_(True)
    combined = torch.cat([xm, y])
    dims = [0, 2, 3] if conv else [0]
    view = (1, 3, 1, 1) if conv else (1, 3)
    mean = combined.mean(dims)
    var = combined.var(dims, unbiased=False)
    manual = bn.weight.detach().view(view) * (xm - mean.view(view)) / torch.sqrt(var.view(view) + bn.eps)
    (manual * weights).sum().backward()
    assert torch.allclose(x.grad, xm.grad, atol=1e-5)
    # and it differs from two_step's constant-statistics gradient
    (expected_out * weights).sum().backward()
    assert (x.grad - x_ref.grad).abs().max() > 1e-3


def test_ubn_model_runs_two_step_grad() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2)).train()
    selected, others = find_batchnorm(model)
    wrapper = UBNModel(model, "two_step_grad", selected, others)
    wrapper.set_unlabeled(torch.randn(6, 4))
    out = wrapper(torch.randn(5, 4))
    assert out.shape == (5, 2)
    out.sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
