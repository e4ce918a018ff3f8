"""Dense monocular depth regression (docs/methods.md section 1, the UBN depth experiment).

Data: images plus a per-pixel depth map in metres in ``batch.extras["depth"]``
((N, 1, H, W), 0 = no measurement, e.g. pixels without a projected Velodyne
point). Model: a dense model (``dispnet``) returning depth maps at several
scales, finest first.

Training views: the image resized to ``state.resolution`` and normalised, and
the depth map resized alike (nearest neighbour, so sparse maps stay sparse);
a random horizontal flip applies to both (the only augmentation: photometric
changes would not change depth, geometric ones must move image and depth
together). ``views`` is ``[image, depth]``; the model input is ``views[0]``.

Loss: on every predicted scale, with the target resized to that scale
(nearest), the mean over valid pixels of ``|log d_hat - log d|`` (``log_l1``,
default) or ``|d_hat - d|`` (``l1``); scales weigh equally. Metrics on the
validation set at the full resolution, over all valid pixels: ``delta1`` (the
fraction with max(d_hat/d, d/d_hat) < 1.25) and ``abs_rel`` (mean |d_hat - d|/d).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from hasten.config import Config
from hasten.data.stream import DataInfo
from hasten.errors import UserError
from hasten.models import build_model
from hasten.models.common import model_unchanged
from hasten.registry import REGISTRY, Options
from hasten.state import Batch, State, StepOutput
from hasten.tasks.base import Task, all_reduce_sum


class DepthOptions(Options):
    """``task.options`` of ``task.name: depth``."""

    loss: Literal["log_l1", "l1"] = Field("log_l1", description="per-pixel loss on valid pixels")
    flip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip (image and depth together)")
    max_depth: float = Field(80.0, gt=0, description="target depths above this count as invalid (metres)")


def _normalise(images: Tensor, resolution: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    x = images.float() / 255.0
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def resize_depth(depth: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Nearest-neighbour resize: keeps measured values and the zeros of missing ones."""
    if depth.shape[-2:] == tuple(size):
        return depth
    return F.interpolate(depth, size=tuple(size), mode="nearest")


class DepthTask(Task):
    name = "depth"
    Options = DepthOptions
    metrics = ("val/loss", "val/delta1", "val/abs_rel")

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__(config, info)
        if info.is_vector:
            raise UserError(f"task.name: depth needs images; data.dataset {config.data.dataset!r} holds vectors")
        self.model = build_model(
            config.model.name, num_classes=0, in_channels=info.channels, options=config.model.options, key="model.name"
        )
        if not getattr(self.model, "dense_output", False):
            raise UserError(
                f"model.name: task depth needs a dense model returning per-pixel predictions (dispnet); "
                f"got {config.model.name!r}"
            )

    # ----------------------------------------------------------------- views
    def views(self, state: State, batch: Batch) -> list[Tensor]:
        image = _normalise(batch.images, state.resolution, self.info.mean, self.info.std)
        depth = batch.extras.get("depth")
        if depth is not None:
            depth = resize_depth(depth.float(), image.shape[-2:])
        if self.options.flip > 0:
            draw = torch.rand(len(image), generator=state.generator, device=state.generator.device)
            flip = (draw < self.options.flip).to(image.device).view(-1, 1, 1, 1)
            image = torch.where(flip, image.flip(-1), image)
            if depth is not None:
                depth = torch.where(flip, depth.flip(-1), depth)
        return [image] if depth is None else [image, depth]

    # ------------------------------------------------------------------ loss
    def _pixel_loss(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample sums of the loss over valid pixels, and the valid counts."""
        target = resize_depth(target, prediction.shape[-2:])
        valid = (target > 0) & (target <= self.options.max_depth)
        safe = torch.where(valid, target, torch.ones_like(target))
        prediction = prediction.float()
        if self.options.loss == "log_l1":
            error = (prediction.log() - safe.log()).abs()
        else:
            error = (prediction - safe).abs()
        error = torch.where(valid, error, torch.zeros_like(error))
        return error.flatten(1).sum(1), valid.flatten(1).sum(1)

    def _sample_losses(self, predictions: tuple[Tensor, ...] | Tensor, target: Tensor) -> Tensor:
        if isinstance(predictions, Tensor):
            predictions = (predictions,)
        per_scale = []
        for prediction in predictions:
            total, count = self._pixel_loss(prediction, target)
            per_scale.append(total / count.clamp_min(1))
        return torch.stack(per_scale).mean(0)

    def _target(self, batch: Batch) -> Tensor:
        if len(batch.views) < 2:
            raise UserError(
                f"task depth: data.dataset {self.config.data.dataset!r} gives no depth maps "
                "(batch.extras['depth']); use procedural_depth, kitti or a dataset that returns them"
            )
        return batch.views[1]

    def forward(self, state: State, batch: Batch, model: nn.Module) -> StepOutput:
        losses = self._sample_losses(model(batch.views[0]), self._target(batch))
        return StepOutput(loss=batch.mean_loss(losses), sample_losses=losses.detach(), num_samples=len(batch))

    def sample_losses(self, model: nn.Module, inputs: Tensor, batch: Batch) -> Tensor:
        return self._sample_losses(model(inputs), self._target(batch))

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, state: State) -> dict[str, float]:
        model = self.model
        with model_unchanged(model):
            totals = torch.zeros(4, dtype=torch.float64, device=state.device)  # pixels, loss, delta1 hits, abs-rel sum
            for i, batch in enumerate(state.data.val_batches(self.config.eval.batch_size)):
                if self.config.eval.max_batches is not None and i >= self.config.eval.max_batches:
                    break
                if "depth" not in batch.extras:
                    raise UserError(f"task depth: the val split of {self.config.data.dataset!r} has no depth maps")
                images = _normalise(batch.images.to(state.device), state.max_resolution, self.info.mean, self.info.std)
                predictions = model(images)
                prediction = (predictions[0] if isinstance(predictions, tuple | list) else predictions).float()
                target = resize_depth(batch.extras["depth"].to(state.device).float(), prediction.shape[-2:])
                valid = (target > 0) & (target <= self.options.max_depth)
                d_hat, d = prediction[valid].double(), target[valid].double()
                loss_sum, _ = self._pixel_loss(prediction, target)
                ratio = torch.maximum(d_hat / d, d / d_hat)
                totals += torch.stack(
                    [
                        torch.tensor(float(d.numel()), dtype=torch.float64, device=state.device),
                        loss_sum.double().sum(),
                        (ratio < 1.25).double().sum(),
                        ((d_hat - d).abs() / d).sum(),
                    ]
                )
        pixels, loss, hits, abs_rel = all_reduce_sum(totals).tolist()
        pixels = max(pixels, 1.0)
        return {"val/loss": loss / pixels, "val/delta1": hits / pixels, "val/abs_rel": abs_rel / pixels}


REGISTRY.tasks.add("depth", DepthTask)
