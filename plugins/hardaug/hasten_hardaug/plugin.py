"""The hasten adapter of Hard Augment: m views, a no-grad low-resolution mining pass, the hardest pair."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

import hasten
from hasten.api import (
    EXTRA_TARGETS,
    Batch,
    Config,
    PairScoring,
    State,
    UserError,
    check_resolution,
    is_image_batch,
    resize_batch,
)
from hasten_hardaug.mining import gather_views, hardest_pairs, other_views, pair_table

#: methods whose targets carry no gradient, so extra low-resolution targets are well defined
EXTRA_TARGET_METHODS = ("simsiam", "byol", "mocov2plus", "dino")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_views: int = Field(6, ge=2, le=64, description="m: augmented views drawn per image")
    selection_resolution: int = Field(
        64, gt=0, description="r_sel: side the views are downsampled to for the mining pass (capped at r)"
    )
    extra_targets: bool = Field(
        False, description="the m - 2 non-selected low-resolution views also serve as targets (multi-crop style)"
    )


class HardAugment(hasten.Plugin):
    """Hard Augment: train each image on the hardest of C(m, 2) augmented view pairs."""

    name = "hardaug"
    Settings = Settings

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.task: PairScoring | None = None
        self.pairs: torch.Tensor | None = None
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    @hasten.hookimpl
    def hasten_configure(self, config: Config) -> None:
        if config.task.name != "ssl":
            raise UserError(
                f"plugins.hardaug: Hard Augment mines pairs of self-supervised views and needs task.name: ssl; "
                f"got task.name: {config.task.name!r}"
            )
        method = config.task.options.get("method", "simsiam")
        if self.settings.extra_targets and method not in EXTRA_TARGET_METHODS:
            raise UserError(
                f"plugins.hardaug.extra_targets: true is not defined for task.options.method {method!r} "
                f"(its targets are the online projections themselves); allowed with: {', '.join(EXTRA_TARGET_METHODS)}"
            )

    @hasten.hookimpl
    def hasten_setup(self, state: State) -> None:
        if not isinstance(state.task, PairScoring):
            raise UserError(
                f"plugins.hardaug: needs a task that scores pairs of views (task.name: ssl), "
                f"got task.name: {state.config.task.name!r}"
            )
        self.task = state.task
        self.pairs = pair_table(self.settings.num_views, state.device)
        model = state.task.model  # type: ignore[attr-defined]  # every Task has one
        check_resolution(
            getattr(model, "backbone", model), min(self.settings.selection_resolution, state.max_resolution),
            "plugins.hardaug.selection_resolution",
        )

    def selection_resolution(self, state: State) -> int:
        """r_sel, never above the current training resolution (mining must stay cheaper than training)."""
        return min(self.settings.selection_resolution, state.resolution)

    def mining_flops(self, state: State, task: PairScoring, num_samples: int) -> float:
        """The overhead of mining ``num_samples`` candidates: every view scored at r_sel (one formula for
        training, reported in ``hasten_views``, and planning, ``hasten_plan_step``)."""
        per_view = task.scoring_flops_per_view(state.flops, self.selection_resolution(state))
        return self.settings.num_views * num_samples * per_view

    @hasten.hookimpl
    def hasten_views(self, state: State, batch: Batch) -> list[torch.Tensor] | None:
        if self.task is None or self.pairs is None or not is_image_batch(batch.images):
            return None
        if not state.sampling_active():
            return None  # cool-down: the task's two random views
        task, m, n = self.task, self.settings.num_views, len(batch)
        views = task.augment_views(state, batch.images, m)  # (m, N, C, r, r), one augment call
        r_sel = self.selection_resolution(state)
        low = resize_batch(views.flatten(0, 1), r_sel).view(m, n, *views.shape[2:3], r_sel, r_sel)
        pair_losses, targets = task.score_pairs(state, low)  # no grad, no state change
        _, first, second = hardest_pairs(pair_losses, self.pairs)
        view_a, view_b = gather_views(views, first, second)
        if self.settings.extra_targets and m > 2:
            others = other_views(m, first, second)  # (N, m - 2)
            batch.extras[EXTRA_TARGETS] = targets[others, torch.arange(n, device=others.device)[:, None]]
        state.flops.add_overhead(self.name, self.mining_flops(state, task, n))
        self.last = (pair_losses.max(dim=1).values.mean(), pair_losses.mean())
        return [view_a, view_b]

    @hasten.hookimpl
    def hasten_step_metrics(self, state: State) -> dict[str, float] | None:
        if self.last is None:
            return None
        hardest, mean = torch.stack(self.last).tolist()  # one sync, on logging steps only
        self.last = None
        return {"hardaug/hardest_pair_loss": hardest, "hardaug/mean_pair_loss": mean}

    @hasten.hookimpl
    def hasten_plan_step(self, state: State, step: int, batch_size: int) -> dict[str, Any] | None:
        if not isinstance(state.task, PairScoring) or not state.sampling_active(step):
            return None
        return {self.name: self.mining_flops(state, state.task, batch_size)}
