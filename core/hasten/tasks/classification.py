"""Image classification: cross-entropy with per-sample losses, top-1/top-5."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hasten.batch import is_image_batch
from hasten.config import Config
from hasten.data.augment import ViewSpec, augment_batch, eval_batch
from hasten.data.stream import DataInfo
from hasten.errors import UserError
from hasten.models import build_model
from hasten.models.common import model_unchanged
from hasten.registry import REGISTRY, Options
from hasten.state import Batch, State, StepOutput
from hasten.tasks.base import Task, all_reduce_sum


class ClassificationOptions(Options):
    """``task.options`` of ``task.name: classification``."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing (0 = none)")


class ClassificationTask(Task):
    name = "classification"
    Options = ClassificationOptions
    metrics = ("val/loss", "val/acc1", "val/acc5")

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__(config, info)
        if info.num_classes < 2:
            raise UserError(
                f"task.name: classification needs labelled data with >= 2 classes; "
                f"data.dataset {config.data.dataset!r} has {info.num_classes}"
            )
        self.model = build_model(
            config.model.name,
            num_classes=info.num_classes,
            in_channels=info.channels,
            options=config.model.options,
            key="model.name",
        )
        self.policy = self.augment_policy()

    def views(self, state: State, batch: Batch) -> list[torch.Tensor]:
        if not is_image_batch(batch.images):  # vector data: nothing to augment
            return [batch.images.float()]
        return [
            augment_batch(
                batch.images,
                state.resolution,
                state.aug_magnitude,
                self.policy,
                state.generator,
                self.info.mean,
                self.info.std,
            )
        ]

    def loader_views(self) -> ViewSpec | None:
        if self.info.is_vector:
            return None
        return ViewSpec(self.policy, 1, tuple(self.info.mean), tuple(self.info.std))

    def sample_losses(self, model: nn.Module, inputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(model(inputs), batch.labels, reduction="none")

    def forward(self, state: State, batch: Batch, model: nn.Module) -> StepOutput:
        logits = model(batch.views[0])
        losses = F.cross_entropy(
            logits, batch.labels, reduction="none", label_smoothing=self.options.label_smoothing
        )
        return StepOutput(loss=batch.mean_loss(losses), sample_losses=losses.detach(), num_samples=len(batch))

    def evaluate(self, state: State) -> dict[str, float]:
        """Validation metrics (``val/``) and, with ``eval.train_subset``, the same on training images
        (``trainset/``)."""
        eval_cfg = self.config.eval
        metrics = self._score(state, state.data.val_batches(eval_cfg.batch_size), "val", eval_cfg.max_batches)
        if eval_cfg.train_subset:
            batches = state.data.train_subset_batches(eval_cfg.batch_size, eval_cfg.train_subset)
            metrics.update(self._score(state, batches, "trainset", eval_cfg.max_batches))
        return metrics

    @torch.no_grad()
    def _score(self, state: State, batches: Iterator[Batch], prefix: str, max_batches: int | None) -> dict[str, float]:
        """Loss, top-1 and top-5 of the model in eval mode over ``batches`` (all ranks together)."""
        model = self.model
        with model_unchanged(model):
            totals = torch.zeros(4, dtype=torch.float64, device=state.device)  # n, loss, top1, top5
            k = min(5, self.info.num_classes)
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                images = batch.images.to(state.device)
                labels = batch.labels.to(state.device)
                inputs = eval_batch(images, state.max_resolution, self.info.mean, self.info.std)
                logits = model(inputs).float()
                topk = logits.topk(k, dim=1).indices
                hits = topk.eq(labels[:, None])
                totals += torch.stack(
                    [
                        torch.tensor(float(labels.numel()), device=state.device, dtype=torch.float64),
                        F.cross_entropy(logits, labels, reduction="sum").double(),
                        hits[:, 0].sum().double(),
                        hits.any(dim=1).sum().double(),
                    ]
                )
        n, loss, top1, top5 = all_reduce_sum(totals).tolist()
        n = max(n, 1.0)
        metrics = {f"{prefix}/loss": loss / n, f"{prefix}/acc1": top1 / n}
        if k != 1:
            metrics[f"{prefix}/acc{k}"] = top5 / n
        return metrics


REGISTRY.tasks.add("classification", ClassificationTask)
