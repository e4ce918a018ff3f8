"""Built-in models: the contract (features, head, min resolution), ViT positions, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hasten.errors import UserError
from hasten.models import build_model, check_resolution
from hasten.registry import REGISTRY

# (name, options, resolutions, expected num_features)
CASES = [
    ("small_resnet", {}, (8, 32, 48), 128),
    ("small_resnet", {"width": 8, "blocks": [1, 2], "stem_stride": 2}, (4, 32), 16),
    ("resnet18", {"small_stem": True}, (8, 32), 512),
    ("resnet50", {}, (32, 64), 2048),
    ("vit_tiny", {}, (4, 32, 48), 96),
    ("vit_s16", {"depth": 2}, (16, 64), 384),
]


@pytest.mark.parametrize(("name", "options", "resolutions", "features"), CASES)
def test_forward_shapes_at_several_resolutions(
    name: str, options: dict, resolutions: tuple[int, ...], features: int
) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=3, options=options)
    assert model.num_features == features
    assert model.min_resolution == min(resolutions)  # the smallest case is the model's minimum
    for resolution in resolutions:
        x = torch.randn(2, 3, resolution, resolution)
        assert model(x).shape == (2, 7)
        embedding = model.forward_features(x)
        assert embedding.shape == (2, features)
        assert torch.isfinite(embedding).all()


@pytest.mark.parametrize("name", ["small_resnet", "resnet18", "vit_tiny"])
def test_backbone_without_classes_returns_features_and_trains(name: str) -> None:
    model = build_model(
        name, num_classes=0, in_channels=1, options={"small_stem": True} if name == "resnet18" else None
    )
    assert isinstance(model.head, nn.Identity)
    x = torch.randn(4, 1, 32, 32)
    out = model(x)
    assert out.shape == (4, model.num_features)
    torch.testing.assert_close(out, model.forward_features(x))
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_in_channels_adapts_the_stem() -> None:
    for name, options in [("small_resnet", {}), ("resnet50", {}), ("resnet18", {"small_stem": True}), ("vit_tiny", {})]:
        model = build_model(name, num_classes=3, in_channels=1, options=options)
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_small_stem_keeps_more_spatial_detail() -> None:
    plain = build_model("resnet18", num_classes=2, in_channels=3)
    small = build_model("resnet18", num_classes=2, in_channels=3, options={"small_stem": True})
    assert plain.body.conv1.kernel_size == (7, 7) and isinstance(plain.body.maxpool, nn.MaxPool2d)
    assert small.body.conv1.kernel_size == (3, 3) and small.body.conv1.stride == (1, 1)
    assert isinstance(small.body.maxpool, nn.Identity)
    assert (plain.min_resolution, small.min_resolution) == (32, 8)


def test_mlp_default_is_five_linear_layers_with_batchnorm() -> None:
    model = build_model("mlp", num_classes=2, in_channels=2)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 64), (64, 64), (64, 64), (64, 64), (64, 2)]
    assert len(norms) == 4
    assert model(torch.randn(16, 2)).shape == (16, 2)
    plain = build_model("mlp", num_classes=3, in_channels=5, options={"hidden": [8], "batchnorm": False})
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    assert plain.forward_features(torch.randn(4, 5)).shape == (4, 8)
    # in_features overrides in_channels; image-shaped input is flattened
    flat = build_model("mlp", num_classes=3, in_channels=1, options={"in_features": 16})
    assert flat(torch.randn(4, 1, 4, 4)).shape == (4, 3)


@pytest.mark.parametrize("name", sorted(["small_resnet", "resnet18", "resnet50", "mlp", "vit_s16", "vit_tiny"]))
def test_unknown_option_is_a_user_error_naming_it_and_the_allowed_ones(name: str) -> None:
    with pytest.raises(UserError) as error:
        build_model(name, num_classes=2, in_channels=3, options={"wdith": 3})
    message = str(error.value)
    assert "model.options.wdith: unknown key" in message and "allowed:" in message and f"model {name!r}" in message


def test_unknown_model_lists_registered_ones() -> None:
    with pytest.raises(UserError, match="small_resnet") as error:
        build_model("resnet999", num_classes=2, in_channels=3, key="model.name")
    assert str(error.value).startswith("model.name: unknown model 'resnet999'")
    assert set(REGISTRY.models.names()) >= {"small_resnet", "resnet18", "resnet50", "mlp", "vit_s16", "vit_tiny"}


def test_check_resolution_names_the_smallest_legal_value() -> None:
    resnet = build_model("small_resnet", num_classes=2, in_channels=3)
    check_resolution(resnet, 8, "schedule.min_resolution")
    with pytest.raises(UserError) as error:
        check_resolution(resnet, 7, "schedule.min_resolution")
    assert str(error.value) == ("schedule.min_resolution: resolution 7 is below the smallest this model accepts (8)")
    vit = build_model("vit_tiny", num_classes=2, in_channels=3)
    check_resolution(vit, 28, "data.resolution")
    with pytest.raises(UserError, match=r"resolution 30 must be a multiple of 4 .*28, 32"):
        check_resolution(vit, 30, "data.resolution")
    with pytest.raises(UserError, match=r"below the smallest this model accepts \(4\)"):
        check_resolution(vit, 2, "data.resolution")
    mlp = build_model("mlp", num_classes=2, in_channels=2)
    check_resolution(mlp, 0, "data.resolution")
    with pytest.raises(UserError, match="vector data"):
        check_resolution(mlp, 32, "data.resolution")


def _mae_sincos(dim: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The MAE reference formula, written independently: first half columns, second half rows."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_x, grid_y = np.meshgrid(cols, rows)  # 'xy' indexing: (len(rows), len(cols))
    return np.concatenate([one_d(dim // 2, grid_x), one_d(dim // 2, grid_y)], axis=1)


def test_vit_sincos_equals_standard_formula_at_reference_resolution() -> None:
    model = build_model("vit_tiny", num_classes=2, in_channels=3, options={"ref_resolution": 32})
    table = model.position_embedding(8, 8, torch.device("cpu"), torch.float64)[0].numpy()
    reference = _mae_sincos(96, np.arange(8.0), np.arange(8.0))
    np.testing.assert_allclose(table, reference, atol=1e-12)
    assert table.shape == (64, 96)


def test_vit_positions_scale_to_the_reference_extent() -> None:
    model = build_model("vit_tiny", num_classes=2, in_channels=3, options={"ref_resolution": 32})
    # A 64 px input has a 16x16 grid; its patch centres map onto the 8x8 reference grid.
    coords = (np.arange(16) + 0.5) * 0.5 - 0.5
    table = model.position_embedding(16, 16, torch.device("cpu"), torch.float64)[0].numpy()
    np.testing.assert_allclose(table, _mae_sincos(96, coords, coords), atol=1e-12)
    # The same image region gets the same code: 16 px grid cell 0 covers ref cells -0.25.
    small = model.position_embedding(4, 4, torch.device("cpu"), torch.float64)[0].numpy()
    np.testing.assert_allclose(small[0], _mae_sincos(96, np.array([0.5]), np.array([0.5]))[0], atol=1e-12)


def test_vit_caches_embeddings_per_grid_and_keeps_them_out_of_state_dict() -> None:
    model = build_model("vit_tiny", num_classes=2, in_channels=3)
    first = model.position_embedding(8, 8, torch.device("cpu"), torch.float32)
    assert model.position_embedding(8, 8, torch.device("cpu"), torch.float32) is first
    model(torch.randn(1, 3, 32, 32))
    model(torch.randn(1, 3, 64, 64))
    assert {key[:2] for key in model._pos_cache} == {(8, 8), (16, 16)}
    assert not any("pos" in key for key in model.state_dict())


def test_vit_outputs_finite_at_two_sizes_and_rejects_non_multiples() -> None:
    torch.manual_seed(0)
    model = build_model("vit_tiny", num_classes=5, in_channels=3).eval()
    with torch.no_grad():
        out32 = model(torch.rand(3, 3, 32, 32))
        out64 = model(torch.rand(3, 3, 64, 64))
    assert out32.shape == out64.shape == (3, 5)
    assert torch.isfinite(out32).all() and torch.isfinite(out64).all()
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        model(torch.rand(1, 3, 30, 30))


def _conv_and_linear_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return total


def test_small_resnet_default_fits_the_cpu_budget() -> None:
    # Wall-clock is not testable on a shared machine; the compute is. About
    # 16 MMAC per 32 px image (a 128 batch forward+backward took ~0.1 s on 2 idle cores).
    model = build_model("small_resnet", num_classes=10, in_channels=3)
    macs = _conv_and_linear_macs(model, torch.randn(1, 3, 32, 32))
    assert 10e6 < macs < 25e6, macs
    assert sum(p.numel() for p in model.parameters()) < 400_000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_models_run_on_cuda() -> None:
    for name in ("small_resnet", "vit_tiny"):
        model = build_model(name, num_classes=3, in_channels=3).cuda()
        assert model(torch.randn(2, 3, 32, 32, device="cuda")).shape == (2, 3)
