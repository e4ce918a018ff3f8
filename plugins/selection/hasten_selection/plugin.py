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

``scoring`` chooses how step 2 gets its losses (beyond the research; README):

* ``forward`` (default, the research): the low-resolution forward of the model;
* ``memory``: no forward at all; each candidate's loss from its last training
  forward (:class:`hasten_selection.memory.LossMemory`, written in
  ``hasten_step_end``), never-seen candidates first; zero overhead FLOPs;
* ``mixed``: the memory where it is at most ``memory_max_age`` steps old, the
  low-resolution forward for the rest (only those are counted);
* ``proxy``: the low-resolution forward of a small ResNet of width
  ``proxy_width`` trained alongside on each step's selected batch at r_hat
  (its scoring and its training, 3x forward per trained sample, are counted).

Under DDP every rank scores and selects among its own b_bar candidates (its
shard of the data) with the unwrapped model, so no gradient hook or collective
runs; ranks do not exchange losses. Each rank keeps the memory of its own
samples and trains its own proxy (both saved per rank).
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
    build_model,
    check_resolution,
    is_image_batch,
    legal_resolution,
    model_unchanged,
    resize_batch,
)
from hasten_selection.memory import LossMemory, merge_scores
from hasten_selection.select import Strategy, prune_easy, select

#: the research's selection resolution for 224 px training (docs/methods.md section 5)
DEFAULT_SELECTION_FRACTION = 96 / 224
_QUANTILES = (0.1, 0.5, 0.9)
#: a candidate whose ranking loss is below this counts as "near zero" (selection/near_zero_share)
NEAR_ZERO_LOSS = 0.05
#: the proxy network's architecture (registry name) and optimiser; its width is a setting
PROXY_MODEL = "small_resnet"
PROXY_MOMENTUM = 0.9
PROXY_WEIGHT_DECAY = 5e-4
#: added to run.seed for the proxy's initialisation (its own stream: the run's generators are untouched)
PROXY_SEED_OFFSET = 7_919
#: overhead name of the proxy's training (its scoring forward is counted as ``selection``)
PROXY_TRAINING = "selection_proxy_training"


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
        "uniform = selection off (plain b-sample batches), for ablations; pruned = drop below-mean-loss "
        "candidates with probability prune_ratio and weight the kept ones 1/(1-prune_ratio) (InfoBatch's rule)",
    )
    prune_ratio: float = Field(
        0.5, ge=0, lt=1, description="strategy pruned: probability r of dropping a below-mean-loss candidate"
    )
    scoring_mode: Literal["eval", "train_restore"] = Field(
        "eval",
        description="eval: score in eval mode (BatchNorm uses running statistics); train_restore: score in "
        "train mode (batch statistics) and restore every buffer afterwards",
    )
    scoring: Literal["forward", "memory", "mixed", "proxy"] = Field(
        "forward",
        description="forward: low-res forward of the model (the research); memory: each candidate's loss from its "
        "last training forward, no scoring forward; mixed: the memory where fresh, the forward for the rest; "
        "proxy: low-res forward of a small network trained alongside",
    )
    memory_max_age: int | None = Field(
        None,
        ge=0,
        description="scoring mixed: the oldest remembered loss (in steps) used instead of a scoring forward",
    )
    proxy_width: int | None = Field(None, ge=1, description="scoring proxy: width of the small_resnet proxy")
    proxy_lr: float = Field(0.05, gt=0, description="scoring proxy: the proxy's constant SGD learning rate")

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
        if self.scoring == "mixed" and self.memory_max_age is None:
            raise ValueError(
                "plugins.selection.memory_max_age: required with scoring 'mixed' (the oldest remembered loss, "
                "in steps, used instead of a scoring forward; >= 0)"
            )
        if self.scoring == "mixed" and self.scoring_mode == "train_restore":
            raise ValueError(
                "plugins.selection.scoring_mode: 'train_restore' normalises with the scored batch's statistics, "
                "and with scoring 'mixed' that batch can be a few stale candidates; use scoring_mode 'eval'"
            )
        if self.scoring == "proxy" and self.proxy_width is None:
            raise ValueError("plugins.selection.proxy_width: required with scoring 'proxy' (an integer >= 1)")
        if "prune_ratio" in self.model_fields_set and self.strategy != "pruned":
            raise ValueError(
                f"plugins.selection.prune_ratio: applies only to strategy 'pruned', but strategy is "
                f"'{self.strategy}' (remove prune_ratio or set strategy: pruned)"
            )
        only = {"memory_max_age": "mixed", "proxy_width": "proxy", "proxy_lr": "proxy"}
        for key, scoring in only.items():
            if key in self.model_fields_set and self.scoring != scoring:
                raise ValueError(
                    f"plugins.selection.{key}: applies only to scoring '{scoring}', but scoring is "
                    f"'{self.scoring}' (remove {key} or set scoring: {scoring})"
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
        #: scoring memory / mixed: the last training-forward loss per training-set index
        self.memory: LossMemory | None = None
        self._trained_indices: torch.Tensor | None = None  # this step's trained samples, for the memory
        #: scoring proxy: the small network that scores, and its optimiser
        self.proxy: torch.nn.Module | None = None
        self.proxy_optimizer: torch.optim.Optimizer | None = None
        # Diagnostics of the last selection step, kept on the device until a logging step.
        self._last_step = -1
        self._candidate_losses: torch.Tensor | None = None
        self._selected_losses: torch.Tensor | None = None
        self._fresh: torch.Tensor | None = None  # memory modes: which candidates' ranking came from the memory
        self._ages: torch.Tensor | None = None  # memory modes: the candidates' memory ages (-1: never seen)
        self._proxy_loss: torch.Tensor | None = None  # the proxy's last training loss
        self._quantiles: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None  # strategy pruned: the last selection's loss weights
        self.last_resolution = 0
        #: candidates scored with a forward at the last selection step (all for forward/proxy, 0 for memory)
        self.last_scored = 0

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
        scorer = state.model
        if settings.scoring == "proxy":
            scorer = self.proxy = self._build_proxy(state)
            self.proxy_optimizer = torch.optim.SGD(
                self.proxy.parameters(), lr=settings.proxy_lr, momentum=PROXY_MOMENTUM, nesterov=True,
                weight_decay=PROXY_WEIGHT_DECAY,
            )
        if settings.scoring in ("memory", "mixed"):
            self.memory = LossMemory(state.data.info.train_size, state.device)
        self._model = scorer
        self._task = state.task
        if settings.selection_resolution is not None:
            check_resolution(scorer, settings.selection_resolution, "plugins.selection.selection_resolution")
            self._fixed_resolution = settings.selection_resolution
        elif settings.selection_ratio is None:
            self._fixed_resolution = self._legal(round(DEFAULT_SELECTION_FRACTION * state.max_resolution))
        config = state.config
        if config.run.precision == "bf16":  # score in the precision the training step uses
            self._autocast = lambda: torch.autocast(device_type=state.device.type, dtype=torch.bfloat16)
        self._channels_last = config.run.channels_last
        if self.proxy is not None and self._channels_last:
            self.proxy.to(memory_format=torch.channels_last)
        self._quantiles = torch.tensor(_QUANTILES, device=state.device)
        if settings.scoring_mode == "train_restore":
            self._snapshot = BufferSnapshot(scorer)
        if state.is_main and settings.strategy != "uniform":
            rule = f"prune_ratio={settings.prune_ratio}" if settings.strategy == "pruned" else f"beta={settings.beta}"
            print(
                f"selection: {settings.strategy} {rule}, {self.num_candidates} candidates for "
                f"{state.batch_size} per step (per rank), {self.describe_scoring()}, "
                f"warm-up {settings.warmup_steps} steps",
                file=sys.stderr,
            )

    def _build_proxy(self, state: hasten.State) -> torch.nn.Module:
        """The proxy: a small_resnet of ``proxy_width`` for the task's classes and channels, on the device."""
        info = state.data.info
        if info.is_vector:
            raise hasten.UserError(
                f"plugins.selection.scoring: 'proxy' scores with a small ResNet, which needs image data; "
                f"data.dataset {state.config.data.dataset!r} is vector data (allowed here: forward, memory, mixed)"
            )
        # The proxy's initialisation draws from its own seed: the model's and the run's generators are untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(state.seed + PROXY_SEED_OFFSET)
            proxy = build_model(
                PROXY_MODEL,
                num_classes=info.num_classes,
                in_channels=info.channels,
                options={"width": self.settings.proxy_width},
                key="plugins.selection.proxy_width",
            )
        return proxy.to(state.device).train()

    def describe_scoring(self) -> str:
        scoring = self.settings.scoring
        if scoring == "memory":
            return "ranked by the loss memory (no scoring forward)"
        where = f"at {self.describe_resolution()}"
        if scoring == "mixed":
            return f"loss memory up to {self.settings.memory_max_age} steps old, else scoring {where}"
        if scoring == "proxy":
            return f"scoring with a width-{self.settings.proxy_width} {PROXY_MODEL} proxy {where}"
        return f"scoring {where}"

    def describe_resolution(self) -> str:
        if self._fixed_resolution is not None:
            return f"{self._fixed_resolution} px"
        return f"{self.settings.selection_ratio} x the training resolution"

    def _legal(self, resolution: int) -> int:
        """The nearest side the scoring model accepts (a multiple of the ViT patch size, at least its minimum)."""
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
    def proxy_trains(self, state: hasten.State, step: int) -> bool:
        """Does the proxy learn at ``step``? While selection is on or still to come (warm-up), not in cool-down."""
        return (
            self.proxy is not None
            and self.settings.strategy != "uniform"
            and self.num_candidates > state.batch_size
            and state.sampling_active(step)
        )

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

    def _low_resolution(self, batch: hasten.Batch) -> tuple[torch.Tensor, int]:
        """The task's view of ``batch`` downsampled to r_hat, and r_hat (0 for vector data)."""
        view = batch.views[0]
        resolution = 0
        if is_image_batch(view):
            resolution = self.scoring_resolution(view.shape[-1])
            view = resize_batch(view, resolution)
            if self._channels_last:
                view = view.contiguous(memory_format=torch.channels_last)
        return view, resolution

    @hasten.hookimpl
    def hasten_select(self, state: hasten.State, batch: hasten.Batch) -> hasten.Batch | None:
        keep_count = state.batch_size
        memory = self.memory
        if len(batch) <= keep_count:  # the stream delivered a plain batch: not a selection step
            if memory is not None:
                self._trained_indices = batch.indices
            if self.proxy is not None and self.proxy_trains(state, state.step):  # warm-up: the proxy learns
                view, resolution = self._low_resolution(batch)
                self.train_proxy(state, view, batch, resolution)
            return None
        if batch.indices.device != state.device:  # the stream keeps them on the host; the draw is on the device
            batch.indices = batch.indices.to(state.device, non_blocking=True)
        scoring = self.settings.scoring
        resolution = 0
        if scoring == "memory":
            assert memory is not None
            losses = memory.recall(batch.indices)
            self._fresh = losses.isfinite()  # the memory of any age ranks; never-seen samples rank first
            self._ages = memory.ages(batch.indices, state.step)
            scored = 0
        else:
            view, resolution = self._low_resolution(batch)
            if scoring == "mixed":
                assert memory is not None and self.settings.memory_max_age is not None
                remembered = memory.recall(batch.indices)
                fresh = memory.fresh(batch.indices, state.step, self.settings.memory_max_age)
                # The stale candidates' count decides the scoring batch's shape: one host sync per step.
                stale = (~fresh).nonzero().squeeze(1)
                scored = int(stale.numel())
                if scored:
                    new = self.score(state, view[stale], batch.subset(stale))
                else:
                    new = remembered.new_zeros(0)
                losses = merge_scores(remembered, fresh, stale, new)
                self._fresh = fresh
                self._ages = memory.ages(batch.indices, state.step)
            else:
                losses = self.score(state, view, batch)
                scored = len(batch)
        if self.settings.strategy == "pruned":
            keep, weights = prune_easy(losses, keep_count, self.settings.prune_ratio, state.generator)
            selected = batch.subset(keep)
            selected.loss_weights = weights
            self._weights = weights
        else:
            keep = select(losses, keep_count, self.settings.beta, state.generator, strategy=self.settings.strategy)
            selected = batch.subset(keep)
        self.last_resolution = resolution
        self.last_scored = scored
        state.flops.add_overhead(self.name, self.scoring_flops(state, resolution, scored))
        if self.proxy is not None:
            self.train_proxy(state, view[keep], selected, resolution)
        if memory is not None:
            self._trained_indices = selected.indices
        self._last_step = state.step
        self._candidate_losses = losses
        self._selected_losses = losses[keep]
        return selected

    def scorer(self, state: hasten.State) -> torch.nn.Module:
        """The module the scoring forward runs: the proxy, or the (unwrapped) model."""
        return self.proxy if self.proxy is not None else state.model

    # The overhead FLOPs, one formula each for training (reported) and planning (hasten_plan_step).
    def scoring_flops(self, state: hasten.State, resolution: int, count: int) -> float:
        """Scoring ``count`` candidates at ``resolution``: one forward of the scorer each."""
        if not count:
            return 0.0
        return state.flops.forward_per_sample(self.scorer(state), state.task.input_shape(resolution)) * count

    def proxy_training_flops(self, state: hasten.State, resolution: int, count: int) -> float:
        """One training step of the proxy on ``count`` samples at ``resolution``."""
        assert self.proxy is not None
        per_sample = state.flops.forward_per_sample(self.proxy, state.task.input_shape(resolution))
        return state.flops.train_step_flops(per_sample, count)

    def score(self, state: hasten.State, inputs: torch.Tensor, batch: hasten.Batch) -> torch.Tensor:
        """Per-sample losses of ``inputs`` without gradient, leaving every model buffer as it was.

        ``eval``: BatchNorm normalises with its running statistics and updates
        nothing. ``train_restore``: train-mode forward (batch statistics, as the
        training step sees them), then every buffer is copied back from the
        snapshot: PyTorch updates running statistics in train mode even under
        no_grad. The unwrapped ``state.model`` (or the proxy) is used, so DDP hooks never run.
        """
        task = self._task
        assert task is not None
        scorer = self.scorer(state)
        autocast: AbstractContextManager[Any] = self._autocast() if self._autocast is not None else nullcontext()
        train = self.settings.scoring_mode == "train_restore"
        with model_unchanged(scorer, train=train, buffers=self._snapshot if train else None) as model, autocast:
            losses = task.sample_losses(model, inputs, batch)
        return losses.float()

    def train_proxy(self, state: hasten.State, inputs: torch.Tensor, batch: hasten.Batch, resolution: int) -> None:
        """One SGD step of the proxy on ``inputs`` (the trained samples at r_hat), counted as overhead."""
        proxy, optimizer = self.proxy, self.proxy_optimizer
        assert proxy is not None and optimizer is not None
        autocast: AbstractContextManager[Any] = self._autocast() if self._autocast is not None else nullcontext()
        task = self._task
        assert task is not None
        with autocast:
            loss = task.sample_losses(proxy, inputs, batch).float().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self._proxy_loss = loss.detach()
        state.flops.add_overhead(PROXY_TRAINING, self.proxy_training_flops(state, resolution, len(batch)))

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        trained, self._trained_indices = self._trained_indices, None
        if self.memory is None or trained is None or output.sample_losses is None:
            return
        if output.sample_losses.shape[0] == trained.shape[0]:  # a forward that reports every trained sample
            self.memory.remember(trained, output.sample_losses, state.step)

    # ------------------------------------------------------------ checkpoints
    @hasten.hookimpl
    def hasten_state_dict(self, state: hasten.State) -> dict[str, Any] | None:
        blob: dict[str, Any] = {}
        if self.memory is not None:
            blob["memory"] = {k: v.clone() for k, v in self.memory.state_dict().items()}
        if self.proxy is not None and self.proxy_optimizer is not None:
            blob["proxy"] = self.proxy.state_dict()
            blob["proxy_optimizer"] = self.proxy_optimizer.state_dict()
        return {self.name: blob} if blob else None

    @hasten.hookimpl
    def hasten_load_state_dict(self, state: hasten.State, blob: dict[str, Any]) -> None:
        mine = blob.get(self.name, {})
        if self.memory is not None and "memory" in mine:
            self.memory.load_state_dict(mine["memory"])
        if self.proxy is not None and self.proxy_optimizer is not None and "proxy" in mine:
            self.proxy.load_state_dict(mine["proxy"])
            self.proxy_optimizer.load_state_dict(mine["proxy_optimizer"])

    # ------------------------------------------------------------ diagnostics
    @hasten.hookimpl
    def hasten_step_metrics(self, state: hasten.State) -> dict[str, float]:
        q, candidates, selected = self._quantiles, self._candidate_losses, self._selected_losses
        extra: dict[str, float] = {}
        if self._proxy_loss is not None:
            extra["selection/proxy_loss"] = float(self._proxy_loss)
        if self._last_step != state.step or candidates is None or selected is None or q is None:
            return {"selection/active": 0.0, **extra}
        # Never-seen candidates rank at +inf (memory modes): left out of the loss statistics.
        seen_candidates = candidates.masked_fill(candidates.isinf(), float("nan"))
        seen_selected = selected.masked_fill(selected.isinf(), float("nan"))
        parts = [
            torch.nanquantile(seen_candidates, q),
            torch.nanquantile(seen_selected, q),
            seen_candidates.nanmean().view(1),
            seen_selected.nanmean().view(1),
            (candidates < NEAR_ZERO_LOSS).float().mean().view(1),
        ]
        names = [f"candidate_loss_q{round(100 * p)}" for p in _QUANTILES]
        names += [f"selected_loss_q{round(100 * p)}" for p in _QUANTILES]
        names += ["candidate_loss_mean", "selected_loss_mean", "near_zero_share"]
        if self._fresh is not None and self._ages is not None:
            seen = self._ages >= 0
            parts += [
                self._fresh.float().mean().view(1),
                seen.float().mean().view(1),
                # nan when no candidate was ever trained on
                (self._ages.clamp(min=0).sum() / seen.sum()).float().view(1),
            ]
            names += ["memory_fresh_share", "memory_seen_share", "memory_age_mean"]
        if self._weights is not None:  # strategy pruned: the share of trained samples up-weighted 1/(1-r)
            parts.append((self._weights > 1).float().mean().view(1))
            names.append("upweighted_share")
        values = torch.cat(parts).tolist()
        metrics = {f"selection/{n}": v for n, v in zip(names, values, strict=True)}
        metrics["selection/active"] = 1.0
        metrics["selection/resolution"] = float(self.last_resolution)
        metrics["selection/candidates"] = float(len(candidates))
        metrics["selection/scored_share"] = self.last_scored / len(candidates)
        metrics.update(extra)
        return metrics

    @hasten.hookimpl
    def hasten_plan_step(self, state: hasten.State, step: int, batch_size: int) -> dict[str, float] | None:
        """The overhead of ``step``; for ``mixed`` an upper bound (every candidate scored: the memory's
        freshness depends on the losses and cannot be planned)."""
        settings = self.settings
        if settings.strategy == "uniform":
            return None
        selecting = batch_size > state.batch_size
        resolution = self.scoring_resolution(state.resolution)
        if self.proxy is not None:
            if not (selecting or self.proxy_trains(state, step)):
                return None
            planned = {PROXY_TRAINING: self.proxy_training_flops(state, resolution, state.batch_size)}
            if selecting:
                planned[self.name] = self.scoring_flops(state, resolution, batch_size)
            return planned
        if not selecting:
            return None
        if settings.scoring == "memory":
            return {self.name: 0.0}
        return {self.name: self.scoring_flops(state, resolution, batch_size)}
