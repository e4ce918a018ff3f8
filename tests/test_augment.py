"""Batch augmentation: shapes, determinism, equivalence with eval, and each op's effect."""

from __future__ import annotations

import pytest
import torch

from hasten.data.augment import AugmentPolicy, augment_batch, eval_batch, resize_batch
from hasten.errors import UserError

IDENTITY = AugmentPolicy(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=0.0)
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # no normalisation: outputs stay in [0, 1]


def images(n: int = 64, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Random smooth-ish uint8 images, left-right asymmetric (a bright left edge)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x[..., : size // 8] = 1.0
    return (x * 255).round().to(torch.uint8)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("resolution", [16, 24, 32, 48])
def test_output_shape_dtype_and_range(resolution: int) -> None:
    out = augment_batch(images(), resolution, 5.0, AugmentPolicy.simclr(solarize=0.2), gen(), *UNIT)
    assert out.shape == (64, 3, resolution, resolution)
    assert out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    normalised = augment_batch(images(), resolution, 5.0, AugmentPolicy(), gen(), (0.5,) * 3, (0.25,) * 3)
    torch.testing.assert_close(
        normalised, (augment_batch(images(), resolution, 5.0, AugmentPolicy(), gen(), *UNIT) - 0.5) / 0.25
    )


def test_same_generator_state_is_bit_identical_and_seeds_differ() -> None:
    policy = AugmentPolicy.simclr(solarize=0.2)
    first = augment_batch(images(), 24, 6.0, policy, gen(7), *UNIT)
    again = augment_batch(images(), 24, 6.0, policy, gen(7), *UNIT)
    other = augment_batch(images(), 24, 6.0, policy, gen(8), *UNIT)
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 0.05
    # consecutive calls advance the generator: a second batch differs from the first
    g = gen(7)
    augment_batch(images(), 24, 6.0, policy, g, *UNIT)
    assert not torch.equal(augment_batch(images(), 24, 6.0, policy, g, *UNIT), first)


@pytest.mark.parametrize(("resolution", "tolerance"), [(32, 1e-6), (48, 1e-5), (24, 0.05)])
def test_full_crop_without_flip_equals_eval_batch(resolution: int, tolerance: float) -> None:
    batch = images()
    augmented = augment_batch(batch, resolution, 5.0, IDENTITY, gen(), *UNIT)
    reference = eval_batch(batch, resolution, *UNIT)
    assert (augmented - reference).abs().max() < tolerance


def test_downscaling_crop_is_antialiased_like_eval() -> None:
    # roi_align with adaptive sampling averages each output pixel's whole bin:
    # an area (box) filter. eval's antialiased bilinear uses a wider triangle
    # filter: close on average, not identical.
    batch = images(size=64)
    augmented = augment_batch(batch, 16, 5.0, IDENTITY, gen(), *UNIT)
    area = torch.nn.functional.interpolate(batch.float() / 255, size=(16, 16), mode="area")
    assert (augmented - area).abs().max() < 1e-5
    assert (augmented - eval_batch(batch, 16, *UNIT)).abs().mean() < 0.05


def test_flip_happens_with_its_probability() -> None:
    batch = images(n=2000)
    plain = eval_batch(batch, 32, *UNIT)
    out = augment_batch(batch, 32, 5.0, AugmentPolicy(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.5), gen(), *UNIT)
    flipped = (out - plain.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-6
    unflipped = (out - plain).abs().amax(dim=(1, 2, 3)) < 1e-6
    assert bool((flipped ^ unflipped).all())  # every sample is exactly one of the two
    assert 0.45 < flipped.float().mean().item() < 0.55
    always = augment_batch(
        batch[:8], 32, 5.0, AugmentPolicy(crop_scale=(1, 1), crop_ratio=(1, 1), flip=1.0), gen(), *UNIT
    )
    torch.testing.assert_close(always, plain[:8].flip(-1))


def test_crop_scale_controls_zoom() -> None:
    # a small crop magnifies: fewer bright left-edge pixels survive than in the full view
    batch = images(n=256)
    small = augment_batch(batch, 32, 5.0, AugmentPolicy(crop_scale=(0.1, 0.1), flip=0.0), gen(), *UNIT)
    full = augment_batch(batch, 32, 5.0, IDENTITY, gen(), *UNIT)
    edge_small = (small[..., :4] == 1.0).float().mean()
    edge_full = (full[..., :4] == 1.0).float().mean()
    assert edge_full > 0.99 and edge_small < 0.5


def test_color_jitter_strength_grows_with_magnitude() -> None:
    batch = images(n=256)
    base = augment_batch(batch, 32, 5.0, IDENTITY, gen(), *UNIT)
    jitter = AugmentPolicy(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.0, color_jitter=1.0)
    deviation = {
        m: (augment_batch(batch, 32, m, jitter, gen(), *UNIT) - base).abs().mean().item() for m in (0, 2, 5, 10)
    }
    assert deviation[0] == 0.0
    assert 0.01 < deviation[2] < deviation[5] < deviation[10]
    # probability 0 means no effect at any magnitude
    off = AugmentPolicy(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.0, color_jitter=0.0)
    assert torch.equal(augment_batch(batch, 32, 10.0, off, gen(), *UNIT), base)


def test_color_jitter_probability_applies_per_sample() -> None:
    batch = images(n=1000)
    base = augment_batch(batch, 32, 5.0, IDENTITY, gen(), *UNIT)
    half = AugmentPolicy(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.0, color_jitter=0.3)
    out = augment_batch(batch, 32, 5.0, half, gen(), *UNIT)
    changed = (out != base).flatten(1).any(dim=1).float().mean().item()
    assert 0.25 < changed < 0.35


def test_grayscale_makes_channels_equal() -> None:
    out = augment_batch(images(), 32, 5.0, AugmentPolicy(grayscale=1.0), gen(), *UNIT)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    colour = augment_batch(images(), 32, 5.0, AugmentPolicy(), gen(), *UNIT)
    assert (colour[:, 0] - colour[:, 1]).abs().mean() > 0.05


def _total_variation(x: torch.Tensor) -> float:
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()).item()


def test_blur_smooths_and_scales_with_resolution() -> None:
    noisy = torch.randint(0, 256, (32, 3, 224, 224), dtype=torch.uint8, generator=gen())
    sharp = augment_batch(noisy, 224, 5.0, IDENTITY, gen(), *UNIT)
    blurred_policy = AugmentPolicy(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.0, blur=1.0)
    blurred = augment_batch(noisy, 224, 5.0, blurred_policy, gen(), *UNIT)
    assert _total_variation(blurred) < 0.6 * _total_variation(sharp)
    assert blurred.mean().item() == pytest.approx(sharp.mean().item(), abs=0.01)  # kernels are normalised


def test_solarize_inverts_bright_pixels() -> None:
    batch = images()
    base = augment_batch(batch, 32, 5.0, IDENTITY, gen(), *UNIT)
    policy = AugmentPolicy(crop_scale=(1, 1), crop_ratio=(1, 1), flip=0.0, solarize=1.0)
    out = augment_batch(batch, 32, 5.0, policy, gen(), *UNIT)
    torch.testing.assert_close(out, torch.where(base >= 0.5, 1 - base, base))


def test_single_channel_images_take_every_op() -> None:
    grey = images(channels=1)
    out = augment_batch(grey, 24, 10.0, AugmentPolicy.simclr(solarize=0.5), gen(), (0.5,), (0.25,))
    assert out.shape == (64, 1, 24, 24)
    assert torch.isfinite(out).all()
    assert eval_batch(grey, 16, (0.5,), (0.25,)).shape == (64, 1, 16, 16)
    with pytest.raises(ValueError, match="3 values for 1-channel"):
        eval_batch(grey, 16, (0.5,) * 3, (0.25,) * 3)


def test_resize_batch() -> None:
    x = torch.rand(4, 3, 32, 32)
    assert resize_batch(x, 32) is x
    small = resize_batch(x, 8)
    assert small.shape == (4, 3, 8, 8)
    assert small.mean().item() == pytest.approx(x.mean().item(), abs=0.01)


def test_policy_validation_and_simclr_preset() -> None:
    simclr = AugmentPolicy.simclr()
    assert (simclr.crop_scale, simclr.flip, simclr.color_jitter, simclr.grayscale, simclr.blur, simclr.solarize) == (
        (0.2, 1.0),
        0.5,
        0.8,
        0.2,
        0.5,
        0.0,
    )
    assert AugmentPolicy.simclr(blur=0.1, solarize=0.2).solarize == 0.2
    with pytest.raises(UserError, match="crop_scale"):
        AugmentPolicy(crop_scale=(0.0, 1.0))
    with pytest.raises(UserError, match=r"augment\.flip"):
        AugmentPolicy(flip=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batches_are_deterministic_with_a_cuda_generator() -> None:
    batch = images().cuda()
    policy = AugmentPolicy.simclr(solarize=0.2)
    first = augment_batch(batch, 24, 5.0, policy, torch.Generator("cuda").manual_seed(3), *UNIT)
    again = augment_batch(batch, 24, 5.0, policy, torch.Generator("cuda").manual_seed(3), *UNIT)
    assert first.device.type == "cuda" and torch.equal(first, again)
    cpu_generator = augment_batch(batch, 24, 5.0, policy, gen(3), *UNIT)  # CPU generator, CUDA images
    torch.testing.assert_close(
        cpu_generator.cpu(), augment_batch(batch.cpu(), 24, 5.0, policy, gen(3), *UNIT), atol=1e-4, rtol=0
    )
