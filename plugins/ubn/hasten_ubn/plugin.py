"""The ``ubn`` plugin: trains with Unsupervised Batch Normalization (docs/methods.md section 1).

Each step the engine attaches the unlabeled stream's batch (``batch.unlabeled``);
this plugin augments it with the task's own ``views`` and runs the task's
forward through :class:`hasten_ubn.ubn.UBNModel`, so the loss on the labeled
batch is computed with BN statistics of the combined batch, for any task whose
model input is ``views[0]`` (classification, depth).
"""

from __future__ import annotations

import argparse

from pydantic import BaseModel, ConfigDict, Field

import hasten
from hasten.api import Batch, Config, State, StepOutput, UserError
from hasten_ubn.ubn import Mode, UBNModel, find_batchnorm


class UBNSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Mode = Field(
        "two_step",
        description="two_step: no-grad forward of [labeled; unlabeled] records BN statistics, then the labeled "
        "forward-backward uses them as constants (the research's method); two_step_grad: the same statistics, "
        "gradient through the labeled samples' share of them (beyond the research); joint: one forward of the "
        "concatenation, loss on the labeled rows, gradients through all of the statistics (cheaper)",
    )
    unlabeled_batch_size: int | None = Field(
        None, gt=0, description="global unlabeled batch size; null = data.unlabeled.batch_size or data.batch_size"
    )
    layers: list[str] | None = Field(
        None,
        min_length=1,
        description="fnmatch patterns of the BatchNorm module names UBN applies to (e.g. 'body.*'); null = all",
    )


class UBN(hasten.Plugin):
    """Unsupervised Batch Normalization: BN statistics from labeled + unlabeled batches."""

    name = "ubn"
    Settings = UBNSettings

    def __init__(self, settings: UBNSettings) -> None:
        super().__init__(settings)
        self.wrapper: UBNModel | None = None
        self.unlabeled_per_rank = 0

    # ---------------------------------------------------------------- checks
    @hasten.hookimpl
    def hasten_configure(self, config: Config) -> None:
        data = config.data
        if data.unlabeled is None and data.labeled_fraction is None and data.labels_per_class is None:
            raise UserError(
                "plugins.ubn: needs an unlabeled stream: set data.unlabeled or data.labeled_fraction "
                "(or data.labels_per_class)"
            )
        wanted = self.settings.unlabeled_batch_size
        given = data.unlabeled.batch_size if data.unlabeled is not None else None
        if wanted is not None and given is not None and wanted != given:
            raise UserError(
                f"plugins.ubn.unlabeled_batch_size: {wanted} differs from data.unlabeled.batch_size {given}; "
                "set only one of them"
            )

    @hasten.hookimpl
    def hasten_setup(self, state: State) -> None:
        task = state.task
        if getattr(task, "num_views", 1) != 1:
            raise UserError(
                f"plugins.ubn: task {task.name!r} trains on {task.num_views} views; UBN supports single-view "
                "tasks (classification, depth)"
            )
        if state.data.unlabeled is None:
            raise UserError(
                "plugins.ubn: the data config leaves no unlabeled samples (e.g. data.labeled_fraction 1.0); "
                "lower data.labeled_fraction or set data.unlabeled.dataset"
            )
        patterns = self.settings.layers
        selected, others = find_batchnorm(state.model, patterns)
        if not selected and not others:
            raise UserError(
                f"plugins.ubn: model {state.config.model.name!r} has no BatchNorm layer; UBN needs BatchNorm1d/2d "
                "(e.g. model.options.batchnorm: true for mlp)"
            )
        if not selected:
            names = ", ".join(n for n, _ in others)
            raise UserError(f"plugins.ubn.layers: {patterns} match no BatchNorm layer; the model's are: {names}")
        if self.settings.unlabeled_batch_size is not None:
            size = self.settings.unlabeled_batch_size
            if size % state.world_size:
                raise UserError(
                    f"plugins.ubn.unlabeled_batch_size: {size} is not divisible by the {state.world_size} processes"
                )
            # The stream is built after setup (in fit), so it forms batches of this size.
            state.data.unlabeled_batch_size = size // state.world_size
        self.unlabeled_per_rank = state.data.unlabeled_batch_size
        self.wrapper = UBNModel(state.train_model or state.model, self.settings.mode, selected, others)
        state.scratch[self.name] = {"layers": [n for n, _ in selected]}

    # -------------------------------------------------------------- the step
    @hasten.hookimpl
    def hasten_forward(self, state: State, batch: Batch) -> StepOutput:
        assert self.wrapper is not None
        extra = batch.unlabeled
        if extra is None:
            raise UserError("plugins.ubn: the step has no unlabeled batch (data.unlabeled stream missing)")
        # The unlabeled images get the task's own training augmentation, at this step's resolution.
        unlabeled_view = state.task.views(
            state, Batch(images=extra.images, labels=extra.labels, indices=extra.indices, extras=extra.extras)
        )[0]
        self.wrapper.set_unlabeled(unlabeled_view)
        output: StepOutput = state.task.forward(state, batch, self.wrapper)
        state.flops.add_overhead(self.name, self._overhead(state, len(batch), len(extra)))
        return output

    def _overhead(self, state: State, labeled: int, unlabeled: int) -> float:
        """two_step(_grad): the statistics forward of labeled + unlabeled samples; joint: forward and backward
        of the unlabeled rows (the labeled part is counted as training FLOPs)."""
        per_sample = state.task.forward_flops_per_sample(state.flops, state.resolution)
        if self.settings.mode in ("two_step", "two_step_grad"):
            return per_sample * (labeled + unlabeled)
        return state.flops.train_step_flops(per_sample, unlabeled)

    @hasten.hookimpl
    def hasten_plan_step(self, state: State, step: int, batch_size: int) -> dict[str, float]:
        return {self.name: self._overhead(state, batch_size, self.unlabeled_per_rank)}

    # ------------------------------------------------------------------- CLI
    @staticmethod
    @hasten.hookimpl
    def hasten_add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        from hasten_ubn.report import add_report_command

        add_report_command(subparsers)
