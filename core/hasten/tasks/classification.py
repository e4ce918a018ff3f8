"""Image classification: cross-entropy with per-sample losses, top-1/top-5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hasten.config import Config
from hasten.data.augment import ViewSpec, augment_batch, eval_batch
from hasten.data.stream import DataInfo
from hasten.errors import UserError
from hasten.models import build_model
from hasten.models.common import model_unchanged
from hasten.registry import REGISTRY
from hasten.state import Batch, State, StepOutput
from hasten.tasks.base import Task, all_reduce_sum


class ClassificationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ClassificationTask(Task):
    name = "classification"
    Options = ClassificationOptions

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
        )
        self.policy = self.augment_policy()
        self.vector_data = info.resolution == 0 or False

    def views(self, state: State, batch: Batch) -> list[torch.Tensor]:
        if batch.images.dim() != 4:  # vector data: nothing to augment
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
        if self.vector_data:
            return None
        return ViewSpec(self.policy, 1, tuple(self.info.mean), tuple(self.info.std))

    def sample_losses(self, model: nn.Module, inputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(model(inputs), batch.labels, reduction="none")

    def forward(self, state: State, batch: Batch, model: nn.Module) -> StepOutput:
        logits = model(batch.views[0])
        losses = F.cross_entropy(
            logits, batch.labels, reduction="none", label_smoothing=self.options.label_smoothing
        )
        return StepOutput(loss=losses.mean(), sample_losses=losses.detach(), num_samples=len(batch))

    @torch.no_grad()
    def evaluate(self, state: State) -> dict[str, float]:
        model = self.model
        with model_unchanged(model):
            totals = torch.zeros(4, dtype=torch.float64, device=state.device)  # n, loss, top1, top5
            k = min(5, self.info.num_classes)
            for i, batch in enumerate(state.data.val_batches(self.config.eval.batch_size)):
                if self.config.eval.max_batches is not None and i >= self.config.eval.max_batches:
                    break
                images = batch.images.to(state.device)
                labels = batch.labels.to(state.device)
                inputs = images.float() if images.dim() != 4 else eval_batch(
                    images, state.max_resolution, self.info.mean, self.info.std
                )
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
        return {"val/loss": loss / n, "val/acc1": top1 / n, f"val/acc{k}": top5 / n} if k != 1 else {
            "val/loss": loss / n,
            "val/acc1": top1 / n,
        }


REGISTRY.tasks.add("classification", ClassificationTask)
