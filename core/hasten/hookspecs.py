"""Every hook of hasten's training lifecycle, in the order the engine calls them.

This module is the contract between the engine and all plugins, built-in or
third-party. Each specification says *when* the engine calls it, *in what
order* relative to the others, and *how results combine*:

* ``firstresult``: the engine stops at the first implementation that returns
  something other than ``None`` and uses that value.
* "all results": every implementation runs; the engine combines the list of
  non-``None`` results as stated.

**Call order of one hook** (the one rule; ``tests/test_plugin_contract.py``
pins it). Implementations run in four groups:

1. ``tryfirst`` plugins, in config order;
2. ``tryfirst`` built-ins, in the order ``hasten.engine.builtin_plugins``
   lists them (defaults, schedule, accounting, progress, tracking);
3. unmarked plugins, in the order the config lists them under ``plugins:``;
4. unmarked built-ins, then ``trylast`` plugins, then ``trylast`` built-ins
   (each in the order above).

The built-ins whose position matters are marked: the task's set-up
(``Defaults.hasten_setup``) and the core schedule's set-up (it publishes
``state.warmup_steps``) and step (``state.lr``, ``state.momentum``) are
``tryfirst``, so every plugin sees what they publish and overrides what they
set; the defaults of firstresult hooks and the end-of-run summary are
``trylast``. Accounting, the progress display and tracking are unmarked: they
run after every plugin. A plugin that *publishes* something in
``hasten_setup`` for other plugins marks it ``tryfirst`` (f1clr publishes
``state.warmup_steps`` that way, so progressive reads it whatever the config
order). ``HASTEN_TRACE_HOOKS=1`` prints every hook call with its
implementations in call order (stderr; off by default).

Plugin classes are checked when plugins load: a ``hasten_*`` method that
matches no specification here (``hasten_step_begin``), one left without
``@hasten.hookimpl``, or an implementation taking an argument its
specification does not have is a :class:`hasten.errors.UserError` naming the
plugin, its distribution and the hook. An implementation may take fewer
arguments than its specification (pluggy passes only those it names).

Order of a run (``hasten train``)::

    hasten_add_commands                 (CLI start: the core's commands, then installed plugin classes')
    hasten_register(registry)           (enabled plugins + built-ins)
    hasten_configure(config)            (cross-plugin validation, before any work)
    hasten_setup(state)                 (model, optimizer, data built)
    hasten_load_state_dict(state, blob) (only when resuming)
    hasten_fit_start(state)
    per step:
        hasten_epoch_start(state)       (when the step opens a new epoch)
        hasten_step_start(state)        (schedules set lr, momentum, resolution, magnitude)
        -- the data stream delivers the batch it formed earlier, sized by
           hasten_batch_size(state, step) and hasten_sampling_active(state, step)
        hasten_views(state, batch)      (augmented training inputs; skipped when
                                         the loader made the task's views)
        hasten_select(state, batch)     (subsample a candidate batch)
        hasten_forward(state, batch)    (loss)
        -- backward
        hasten_after_backward(state)
        -- optimizer step
        hasten_step_end(state, output)
        hasten_step_metrics(state)      (every run.log_every steps, every rank)
        hasten_log(state, metrics, step)    (every run.log_every steps, rank 0)
        hasten_epoch_end(state)         (when the step closes an epoch)
        hasten_evaluate(state)          (every eval.every_steps and at the end)
        hasten_state_dict(state)        (when a checkpoint is written)
    hasten_fit_end(state)

Order of ``hasten estimate`` (no training, no model run; a Trainer is built,
so register, configure and setup run as above)::

    hasten_register, hasten_configure, hasten_setup
    per planned step (no hasten_fit_start, no epoch hooks):
        hasten_step_start(state)        (state.step == step)
        hasten_batch_size(state, step)
        hasten_plan_step(state, step, batch_size)
    hasten_plan_summary(state, resolutions)  (once, after the walk)

Hooks run on every rank under torchrun unless a spec says otherwise. The
per-step hooks must stay cheap: pluggy dispatch costs about a microsecond;
do not allocate per step what can be built in ``hasten_setup``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hasten.config import Config
    from hasten.registry import Registry
    from hasten.state import Batch, State, StepOutput

PROJECT = "hasten"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------- start-up
@hookspec
def hasten_add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add sub-commands to the ``hasten`` CLI (e.g. ``lr-find``).

    Called once when the CLI starts, on the *class* of every installed plugin
    (enabled or not), so implement it as a ``@staticmethod``. Each command's
    handler is set with ``parser.set_defaults(handler=fn)``; ``fn(args) -> int``
    returns the exit code. All results are ignored. The core's own commands
    are added by the same hook (:class:`hasten.commands.CoreCommands`,
    ``tryfirst``: they come first in ``hasten --help``).
    """


@hookspec
def hasten_register(registry: Registry) -> None:
    """Add datasets, models, tasks or schedules to ``registry``.

    Called once per run, before the config is resolved, for the built-ins and
    every *enabled* plugin. All results are ignored.
    """


@hookspec
def hasten_configure(config: Config) -> None:
    """Validate the whole resolved config across plugins; raise
    :class:`hasten.errors.UserError` naming the key, the value and what is
    allowed. May *not* change the config: a plugin that needs defaults from
    other sections reads them in ``hasten_setup``.

    Called once, after every plugin's settings were validated and the
    requires/conflicts declarations checked, before anything is built.
    """


@hookspec
def hasten_setup(state: State) -> None:
    """Model, optimizer, task and data streams exist; adapt them here (UBN swaps
    BatchNorm layers, schedules read the total step count, tracking opens its
    run). Called once. Order (see the rule above): the task's set-up and the
    LR schedule's owner (``state.warmup_steps`` published) first, then the
    plugins in config order, then tracking. All results are ignored.
    """


@hookspec
def hasten_fit_start(state: State) -> None:
    """Right before the first step (after a resume, before the first new step)."""


@hookspec
def hasten_fit_end(state: State) -> None:
    """After the last step and the final evaluation; also called when the run
    stops early (``state.stop_reason`` says why). Trackers flush here."""


@hookspec
def hasten_epoch_start(state: State) -> None:
    """Before the first step of each epoch (``state.epoch`` is the new epoch)."""


@hookspec
def hasten_epoch_end(state: State) -> None:
    """After the last step of each epoch."""


# ---------------------------------------------------------------------- per step
@hookspec
def hasten_step_start(state: State) -> None:
    """Set this step's hyper-parameters: ``state.lr``, ``state.momentum``,
    ``state.resolution``, ``state.aug_magnitude``. The engine writes ``lr`` and
    ``momentum`` into every optimizer param group after this hook. All results
    ignored; plugins run after the built-in schedule, so they override it.
    """


@hookspec(firstresult=True)
def hasten_batch_size(state: State, step: int) -> int | None:
    """How many samples the data stream must deliver for ``step``.

    Asked by the stream *when it forms* that batch, which may be several steps
    ahead of ``state.step`` because of prefetching: answer from ``step``, never
    from the current state. firstresult; the default answers
    ``state.batch_size`` (the per-rank training batch size). Selection answers
    its candidate batch size while sampling is active.
    """


@hookspec
def hasten_sampling_active(state: State, step: int) -> bool | None:
    """May a non-uniform sampler (selection, hard augment) act on ``step``?

    All results are ANDed (``None`` = no opinion); no results means yes. Like
    ``hasten_batch_size`` it must answer from ``step`` alone. Cool-down answers
    ``False`` for the last part of training.
    """


@hookspec(firstresult=True)
def hasten_views(state: State, batch: Batch) -> list[Any] | None:
    """Build the training inputs from ``batch.images`` (uint8, on the device).

    Returns the list of views (tensors) the task trains on; the engine stores it
    in ``batch.views``. firstresult; the default asks the task
    (classification: one augmented view; SSL: two views). Hard augment
    returns the hardest pair of ``m`` views.
    """


@hookspec(firstresult=True)
def hasten_select(state: State, batch: Batch) -> Batch | None:
    """Subsample a candidate batch; return the selected :class:`Batch` or
    ``None`` to keep all of it. firstresult; no default."""


@hookspec(firstresult=True)
def hasten_forward(state: State, batch: Batch) -> StepOutput | None:
    """Compute the loss. firstresult; the default is ``state.task.forward``.
    UBN returns a loss computed with the unlabeled stream's statistics."""


@hookspec
def hasten_after_backward(state: State) -> None:
    """After ``loss.backward()``, before the optimizer step (gradient clipping,
    gradient statistics)."""


@hookspec
def hasten_step_end(state: State, output: StepOutput) -> None:
    """After the optimizer step; ``state.step`` is still the finished step.
    Momentum encoders update here; accounting adds the step's FLOPs."""


@hookspec
def hasten_log(state: State, metrics: dict[str, float], step: int) -> None:
    """Receive metrics (trackers, progress display). Called on rank 0 only,
    every ``run.log_every`` steps for training metrics and after each
    evaluation. Values are plain floats already synchronised from the device.
    """


@hookspec
def hasten_step_metrics(state: State) -> dict[str, float] | None:
    """Contribute diagnostics to the next logged metrics (e.g. selected-sample
    loss quantiles). Called on logging steps only (every ``run.log_every``
    steps and the last), on every rank, after ``hasten_step_end`` and before
    ``hasten_log``; the result dicts are merged into the logged metrics."""


@hookspec
def hasten_plan_step(state: State, step: int, batch_size: int) -> dict[str, float] | None:
    """For ``hasten estimate`` (no training): the overhead FLOPs this plugin
    would add at ``step``, as ``{overhead_name: flops}``.

    Called once per planned step after ``hasten_step_start`` set that step's
    hyper-parameters (``state.step == step``); ``batch_size`` is what the
    stream would deliver (``hasten_batch_size``). Must run no model. Results
    are merged by summing equal keys.
    """


@hookspec
def hasten_plan_summary(state: State, resolutions: list[int]) -> dict[str, Any] | None:
    """For ``hasten estimate`` (no training), once after the walk over the planned steps:
    this plugin's own closed-form estimate of the plan (its paper's formula), as
    ``{"key": name, "figures": {figure: value}, "lines": [text, ...]}``.

    ``resolutions``: each planned step's ``state.resolution`` (``state.max_resolution``
    is the full one). The report holds ``figures`` under ``key`` (``--json``); the text
    report prints ``lines`` beside the counted speed-up. Must run no model.
    """


# ------------------------------------------------------------------ evaluation
@hookspec
def hasten_evaluate(state: State) -> dict[str, float] | None:
    """Contribute evaluation metrics (keys like ``val/acc1``). All result dicts
    are merged; the task's own evaluation is the built-in one. Values must
    already be reduced across ranks."""


# --------------------------------------------------------------- checkpointing
@hookspec
def hasten_state_dict(state: State) -> dict[str, Any] | None:
    """What a plugin needs to resume exactly, as ``{plugin_name: blob}``;
    blobs hold tensors, numbers, strings, lists and dicts only (checkpoints
    load with ``weights_only=True``). All results are merged. Called on every
    rank when a checkpoint is written (a collective step under torchrun); each
    rank's dict is saved and handed back to the same rank on resume."""


@hookspec
def hasten_load_state_dict(state: State, blob: dict[str, Any]) -> None:
    """Restore from the merged dict written by ``hasten_state_dict``; each
    plugin takes its own key. Called after ``hasten_setup`` when resuming, on
    every rank with the dict that rank saved."""
