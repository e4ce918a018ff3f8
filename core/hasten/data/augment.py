"""Batch augmentation on the training device: whole batches, no per-sample Python loop.

Images arrive as uint8 (N, C, H, W) at the dataset's source resolution and
leave as normalised float32 (N, C, r, r) at the current training resolution r.
Every random number comes from the caller's ``torch.Generator`` in one draw of
fixed shape, so the same generator state gives bit-identical output whatever
the policy, and a policy change never shifts the random stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from hasten.batch import is_image_batch
from hasten.errors import UserError

#: SimCLR's colour-jitter strength 1.0 corresponds to magnitude 5.
SIMCLR_MAGNITUDE = 5.0
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
# Columns of the per-sample uniform draw.
(_SCALE, _RATIO, _X, _Y, _FLIP, _JITTER, _BRIGHT, _CONTRAST, _SATURATE, _HUE, _GRAY, _BLUR, _SIGMA, _SOLAR) = range(14)
_DRAWS = 14


@dataclass(frozen=True)
class AugmentPolicy:
    """Which augmentations apply, as probabilities per sample, and the crop ranges.

    Colour-jitter *strength* is not here: it follows the schedule's magnitude
    (strength = magnitude / 5; brightness, contrast, saturation 0.8 x strength,
    hue 0.2 x strength).
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    color_jitter: float = 0.0
    grayscale: float = 0.0
    blur: float = 0.0
    solarize: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise UserError(f"augment.crop_scale: need 0 < low <= high <= 1, got {tuple(self.crop_scale)}")
        low, high = self.crop_ratio
        if not 0 < low <= high:
            raise UserError(f"augment.crop_ratio: need 0 < low <= high, got {tuple(self.crop_ratio)}")
        for name in ("flip", "color_jitter", "grayscale", "blur", "solarize"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"augment.{name}: a probability in [0, 1], got {value}")

    @classmethod
    def simclr(cls, *, blur: float = 0.5, solarize: float = 0.0) -> AugmentPolicy:
        """SimCLR's recipe: crop (0.2, 1), flip 0.5, jitter 0.8, grey 0.2, blur 0.5.

        BYOL's two views are ``simclr(blur=1.0)`` and ``simclr(blur=0.1, solarize=0.2)``.
        """
        return cls(crop_scale=(0.2, 1.0), flip=0.5, color_jitter=0.8, grayscale=0.2, blur=blur, solarize=solarize)


@dataclass(frozen=True)
class ViewSpec:
    """Views a loader makes itself (DALI): ``num_views`` independent draws of ``policy``, normalised with
    mean/std. A task declares the ones it trains on with ``Task.loader_views``."""

    policy: AugmentPolicy
    num_views: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


_norm_cache: dict[tuple[tuple[float, ...], tuple[float, ...], torch.device], tuple[Tensor, Tensor]] = {}


def _normalise(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    key = (tuple(mean), tuple(std), x.device)
    cached = _norm_cache.get(key)
    if cached is None:  # one host-to-device copy per (constants, device), not per step
        shape = (1, -1, 1, 1)
        cached = (
            torch.tensor(key[0], dtype=torch.float32, device=x.device).view(shape),
            torch.tensor(key[1], dtype=torch.float32, device=x.device).view(shape),
        )
        _norm_cache[key] = cached
    if cached[0].numel() != x.shape[1]:
        raise ValueError(f"mean/std have {cached[0].numel()} values for {x.shape[1]}-channel images")
    return (x - cached[0]) / cached[1]


def _to_unit(images: Tensor) -> Tensor:
    """uint8 -> float32 in [0, 1]; float input is taken to be in [0, 1] already."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _per_sample(mask: Tensor) -> Tensor:
    return mask.view(-1, 1, 1, 1)


def _uniform_in(u: Tensor, low: float, high: float) -> Tensor:
    return low + (high - low) * u


def _color_jitter(x: Tensor, u: Tensor, strength: float) -> Tensor:
    """Brightness, contrast, saturation, hue (in that order) with per-sample factors."""
    amount = 0.8 * strength
    brightness = _per_sample(_uniform_in(u[:, _BRIGHT], max(0.0, 1 - amount), 1 + amount))
    contrast = _per_sample(_uniform_in(u[:, _CONTRAST], max(0.0, 1 - amount), 1 + amount))
    x = (x * brightness).clamp(0, 1)
    luminance = _gray(x) if x.shape[1] == 3 else x
    mean = luminance.mean(dim=(1, 2, 3), keepdim=True)
    x = (contrast * x + (1 - contrast) * mean).clamp(0, 1)
    if x.shape[1] != 3:  # no colour to saturate or rotate
        return x
    saturation = _per_sample(_uniform_in(u[:, _SATURATE], max(0.0, 1 - amount), 1 + amount))
    x = (saturation * x + (1 - saturation) * _gray(x)).clamp(0, 1)
    # Hue: rotate the chroma plane of YIQ, a 3x3 matrix per sample (cheap
    # approximation of an HSV hue shift that needs no colour-space branches).
    hue = min(0.5, 0.2 * strength)
    angle = _uniform_in(u[:, _HUE], -hue, hue) * (2 * math.pi)
    cos, sin = angle.cos(), angle.sin()
    zeros, ones = torch.zeros_like(cos), torch.ones_like(cos)
    rotation = torch.stack(
        [
            torch.stack([ones, zeros, zeros], -1),
            torch.stack([zeros, cos, -sin], -1),
            torch.stack([zeros, sin, cos], -1),
        ],
        dim=1,
    )
    to_yiq, to_rgb = _RGB_TO_YIQ.to(x.device), _YIQ_TO_RGB.to(x.device)
    matrix = to_rgb @ rotation @ to_yiq
    return torch.einsum("nij,njhw->nihw", matrix, x).clamp(0, 1)


def _gaussian_blur(x: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma: one grouped conv per axis."""
    n, c, h, w = x.shape
    radius = max(1, min(math.ceil(3 * max_sigma), h - 1, w - 1))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(taps[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, k)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)


def augment_batch(
    images: Tensor,
    resolution: int,
    magnitude: float,
    policy: AugmentPolicy,
    generator: torch.Generator,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """Random-resized-crop + flip + colour ops of a whole batch; normalised float32 (N, C, r, r).

    The crop of every sample is one ``roi_align`` call with per-sample boxes
    (adaptive sampling: each output pixel averages its whole source bin, so
    strong downscaling is anti-aliased). Blur sigma is in [0.1, 2.0] * r / 224.
    ``generator`` may live on another device than ``images``.
    """
    if not is_image_batch(images):
        raise ValueError(f"augment_batch takes (N, C, H, W) images, got shape {tuple(images.shape)}")
    n, channels, height, width = images.shape
    device = images.device
    u = torch.rand(n, _DRAWS, generator=generator, device=generator.device).to(device, non_blocking=True)

    # Random-resized-crop boxes: area fraction and log aspect ratio, clamped to the image.
    area = height * width * _uniform_in(u[:, _SCALE], *policy.crop_scale)
    log_low, log_high = math.log(policy.crop_ratio[0]), math.log(policy.crop_ratio[1])
    ratio = torch.exp(_uniform_in(u[:, _RATIO], log_low, log_high))
    crop_w = torch.sqrt(area * ratio).clamp(max=width)
    crop_h = torch.sqrt(area / ratio).clamp(max=height)
    left = u[:, _X] * (width - crop_w)
    top = u[:, _Y] * (height - crop_h)
    index = torch.arange(n, device=device, dtype=torch.float32)
    boxes = torch.stack([index, left, top, left + crop_w, top + crop_h], dim=1)
    x = roi_align(_to_unit(images), boxes, output_size=resolution, spatial_scale=1.0, sampling_ratio=0, aligned=True)

    x = torch.where(_per_sample(u[:, _FLIP] < policy.flip), x.flip(-1), x)
    if policy.color_jitter > 0 and magnitude > 0:
        jittered = _color_jitter(x, u, magnitude / SIMCLR_MAGNITUDE)
        x = torch.where(_per_sample(u[:, _JITTER] < policy.color_jitter), jittered, x)
    if policy.grayscale > 0 and channels == 3:
        x = torch.where(_per_sample(u[:, _GRAY] < policy.grayscale), _gray(x).expand_as(x), x)
    if policy.blur > 0:
        scale = resolution / 224
        sigma = _uniform_in(u[:, _SIGMA], 0.1, 2.0) * scale
        x = torch.where(_per_sample(u[:, _BLUR] < policy.blur), _gaussian_blur(x, sigma, 2.0 * scale), x)
    if policy.solarize > 0:
        x = torch.where(_per_sample(u[:, _SOLAR] < policy.solarize) & (x >= 0.5), 1 - x, x)
    return _normalise(x, mean, std)


def resize_batch(x: Tensor, resolution: int) -> Tensor:
    """Resize a float batch to resolution x resolution (bilinear, antialiased); a no-op at that size."""
    if x.shape[-2] == resolution and x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


def eval_batch(images: Tensor, resolution: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """The whole image resized to ``resolution`` and normalised: float32 (N, C, r, r); vector data
    (N, D) as float32, unchanged."""
    if not is_image_batch(images):
        return images.float()
    return _normalise(resize_batch(_to_unit(images), resolution), mean, std)
