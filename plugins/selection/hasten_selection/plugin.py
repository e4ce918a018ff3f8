"""The ``selection`` plugin: the adapter between :func:`hasten_selection.select` and the engine.

Per step while sampling is active (after ``warmup_steps``, and while every
plugin's ``hasten_sampling_active`` agrees, e.g. not during cool-down):

1. ``hasten_batch_size`` asks the stream for b_bar = round(candidate_ratio * b)
   uniformly drawn samples instead of b; outside the active phase it has no
   opinion and the stream delivers b (nothing is loaded and thrown away);
2. ``hasten_select`` downsamples the task's augmented full-resolution view to
   the selection resolution r_hat, forwards it without gradient and without
   changing any model state (``scoring_mode``), ranks the per-sample losses and
   keeps b candidates (eq. 4.4); the engine trains on those at full resolution;
3. the scoring forward is reported as overhead FLOPs ``selection``:
   forward FLOPs per sample at r_hat x b_bar.

Under DDP every rank scores and selects among its own b_bar candidates (its
shard of the data) with the unwrapped model, so no gradient hook or collective
runs; ranks do not exchange losses.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

import hasten
from hasten.api import (
    BufferSnapshot,
    Config,
    PerSampleLosses,
    check_resolution,
    legal_resolution,
    model_unchanged,
    resize_batch,
)
from hasten_selection.select import Strategy, select

#: the research's selection resolution for 224 px training (docs/methods.md section 5)
DEFAULT_SELECTION_FRACTION = 96 / 224
_QUANTILES = (0.1, 0.5, 0.9)


class SelectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(1.0, ge=0, description="exponent of the rank coefficients p = rank^beta (0 = uniform)")
    candidate_ratio: float = Field(
        2.0, ge=1, description="b_bar / b: candidates drawn per training sample; >= 1 + beta for 'probabilistic'"
    )
    selection_resolution: int | None = Field(
        None,
        gt=0,
        description="scoring resolution r_hat in pixels (at most the training resolution); "
        "default: 96/224 of data.resolution",
    )
    selection_ratio: float | None = Field(
        None,
        gt=0,
        le=1,
        description="scoring resolution as a fraction of the CURRENT training resolution "
        "(follows a resolution schedule); instead of selection_resolution",
    )
    warmup_steps: int = Field(0, ge=0, description="uniform sampling for the first steps (no selection)")
    strategy: Strategy = Field(
        "probabilistic",
        description="probabilistic = eq. 4.4 sampled without replacement; greedy = the b highest losses; "
        "uniform = selection off (plain b-sample batches), for ablations",
    )
    scoring_mode: Literal["eval", "train_restore"] = Field(
        "eval",
        description="eval: score in eval mode (BatchNorm uses running statistics); train_restore: score in "
        "train mode (batch statistics) and restore every buffer afterwards",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SelectionSettings:
        if self.selection_resolution is not None and self.selection_ratio is not None:
            raise ValueError(
                f"plugins.selection.selection_resolution ({self.selection_resolution}) and "
                f"plugins.selection.selection_ratio ({self.selection_ratio}) are both set; set exactly one"
            )
        if self.strategy == "probabilistic" and self.candidate_ratio < 1 + self.beta:
            raise ValueError(
                f"plugins.selection.candidate_ratio = {self.candidate_ratio} must be >= 1 + beta = "
                f"{1 + self.beta} for strategy 'probabilistic' (raise candidate_ratio or lower beta)"
            )
        return self


class Selection(hasten.Plugin):
    """Fast Online Minibatch Selection: train on b of b_bar candidates ranked by a cheap low-res forward."""

    name = "selection"
    Settings = SelectionSettings
    # Only one plugin may decide the candidate batch size and subsample it.
    provides = ("batch_selection",)

    def __init__(self, settings: SelectionSettings) -> None:
        super().__init__(settings)
        self.num_candidates = 0
        self._fixed_resolution: int | None = None
        self._resolutions: dict[int, int] = {}
        self._model: torch.nn.Module | None = None
        self._task: PerSampleLosses | None = None
        self._autocast: Any = None
        self._channels_last = False
        self._snapshot: BufferSnapshot | None = None
        # Diagnostics of the last selection step, kept on the device until a logging step.
        self._last_step = -1
        self._candidate_losses: torch.Tensor | None = None
        self._selected_losses: torch.Tensor | None = None
        self._quantiles: torch.Tensor | None = None
        self.last_resolution = 0

    # ------------------------------------------------------------------ set-up
    @hasten.hookimpl
    def hasten_configure(self, config: Config) -> None:
        full = config.data.resolution
        wanted = self.settings.selection_resolution
        if wanted is not None and full and wanted > full:
            raise hasten.UserError(
                f"plugins.selection.selection_resolution: {wanted} exceeds the training resolution "
                f"data.resolution = {full}; allowed: 1..{full}"
            )

    @hasten.hookimpl
    def hasten_setup(self, state: hasten.State) -> None:
        settings = self.settings
        if not isinstance(state.task, PerSampleLosses):
            raise hasten.UserError(
                f"plugins.selection: task {state.task.name!r} has no per-sample loss to rank; "
                "selection works with task.name: classification"
            )
        state.scratch[self.name] = self  # diagnostics and tests read the plugin's last selection here
        self.num_candidates = round(settings.candidate_ratio * state.batch_size)
        self._model = state.model
        self._task = state.task
        if settings.selection_resolution is not None:
            check_resolution(state.model, settings.selection_resolution, "plugins.selection.selection_resolution")
            self._fixed_resolution = settings.selection_resolution
        elif settings.selection_ratio is None:
            self._fixed_resolution = self._legal(round(DEFAULT_SELECTION_FRACTION * state.max_resolution))
        config = state.config
        if config.run.precision == "bf16":  # score in the precision the training step uses
            self._autocast = lambda: torch.autocast(device_type=state.device.type, dtype=torch.bfloat16)
        self._channels_last = config.run.channels_last and state.device.type == "cuda"
        self._quantiles = torch.tensor(_QUANTILES, device=state.device)
        if settings.scoring_mode == "train_restore":
            self._snapshot = BufferSnapshot(state.model)
        if state.is_main and settings.strategy != "uniform":
            print(
                f"selection: {settings.strategy} beta={settings.beta}, {self.num_candidates} candidates for "
                f"{state.batch_size} per step (per rank), scoring at {self.describe_resolution()}, "
                f"warm-up {settings.warmup_steps} steps",
                file=sys.stderr,
            )

    def describe_resolution(self) -> str:
        if self._fixed_resolution is not None:
            return f"{self._fixed_resolution} px"
        return f"{self.settings.selection_ratio} x the training resolution"

    def _legal(self, resolution: int) -> int:
        """The nearest side the model accepts (a multiple of the ViT patch size, at least its minimum)."""
        assert self._model is not None
        return legal_resolution(self._model, resolution)

    def scoring_resolution(self, training_resolution: int) -> int:
        """r_hat for a step trained at ``training_resolution`` (never above it)."""
        cached = self._resolutions.get(training_resolution)
        if cached is None:
            if self._fixed_resolution is not None:
                wanted = self._fixed_resolution
            else:
                wanted = self._legal(round(float(self.settings.selection_ratio) * training_resolution))
            # A resolution schedule may train below r_hat: then score at the training resolution.
            cached = self._resolutions[training_resolution] = min(wanted, training_resolution)
        return cached

    # --------------------------------------------------------------- per step
    def active(self, state: hasten.State, step: int) -> bool:
        """Does ``step`` select? A function of ``step`` only (the stream asks ahead)."""
        return (
            self.settings.strategy != "uniform"
            and step >= self.settings.warmup_steps
            and self.num_candidates > state.batch_size
            and state.sampling_active(step)
        )

    @hasten.hookimpl
    def hasten_batch_size(self, state: hasten.State, step: int) -> int | None:
        return self.num_candidates if self.active(state, step) else None

    @hasten.hookimpl
    def hasten_select(self, state: hasten.State, batch: hasten.Batch) -> hasten.Batch | None:
        keep_count = state.batch_size
        if len(batch) <= keep_count:  # the stream delivered a plain batch: not a selection step
            return None
        view = batch.views[0]
        resolution = 0
        if view.dim() == 4:
            resolution = self.scoring_resolution(view.shape[-1])
            view = resize_batch(view, resolution)
            if self._channels_last:
                view = view.contiguous(memory_format=torch.channels_last)
        losses = self.score(state, view, batch)
        keep = select(losses, keep_count, self.settings.beta, state.generator, strategy=self.settings.strategy)
        self.last_resolution = resolution
        per_sample = state.flops.forward_per_sample(state.task.model, state.task.input_shape(resolution))
        state.flops.add_overhead(self.name, per_sample * len(batch))
        self._last_step = state.step
        self._candidate_losses = losses
        self._selected_losses = losses[keep]
        return batch.subset(keep)

    def score(self, state: hasten.State, inputs: torch.Tensor, batch: hasten.Batch) -> torch.Tensor:
        """Per-sample losses of ``inputs`` without gradient, leaving every model buffer as it was.

        ``eval``: BatchNorm normalises with its running statistics and updates
        nothing. ``train_restore``: train-mode forward (batch statistics, as the
        training step sees them), then every buffer is copied back from the
        snapshot: PyTorch updates running statistics in train mode even under
        no_grad. The unwrapped ``state.model`` is used, so DDP hooks never run.
        """
        task = self._task
        assert task is not None
        autocast: AbstractContextManager[Any] = self._autocast() if self._autocast is not None else nullcontext()
        train = self.settings.scoring_mode == "train_restore"
        with model_unchanged(state.model, train=train, buffers=self._snapshot if train else None) as model, autocast:
            losses = task.sample_losses(model, inputs, batch)
        return losses.float()

    # ------------------------------------------------------------ diagnostics
    @hasten.hookimpl
    def hasten_step_metrics(self, state: hasten.State) -> dict[str, float]:
        q, candidates, selected = self._quantiles, self._candidate_losses, self._selected_losses
        if self._last_step != state.step or candidates is None or selected is None or q is None:
            return {"selection/active": 0.0}
        values = torch.cat(
            [
                torch.quantile(candidates, q),
                torch.quantile(selected, q),
                candidates.mean().view(1),
                selected.mean().view(1),
            ]
        ).tolist()
        names = [f"candidate_loss_q{round(100 * p)}" for p in _QUANTILES]
        names += [f"selected_loss_q{round(100 * p)}" for p in _QUANTILES]
        names += ["candidate_loss_mean", "selected_loss_mean"]
        metrics = {f"selection/{n}": v for n, v in zip(names, values, strict=True)}
        metrics["selection/active"] = 1.0
        metrics["selection/resolution"] = float(self.last_resolution)
        metrics["selection/candidates"] = float(len(candidates))
        return metrics

    @hasten.hookimpl
    def hasten_plan_step(self, state: hasten.State, step: int, batch_size: int) -> dict[str, float] | None:
        if batch_size <= state.batch_size or self.settings.strategy == "uniform":
            return None
        resolution = self.scoring_resolution(state.resolution)
        per_sample = state.flops.forward_per_sample(state.task.model, state.task.input_shape(resolution))
        return {self.name: per_sample * batch_size}
