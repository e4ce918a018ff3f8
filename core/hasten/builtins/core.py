"""Built-in plugins: the defaults of the firstresult hooks, the core LR
schedule, FLOP accounting and the progress display.

They implement the same public hooks as any third-party plugin. Where a
built-in's position relative to the plugins matters it is marked (the call
order rule is in :mod:`hasten.hookspecs`): defaults of firstresult hooks are
``trylast`` so every plugin may take over; the task's and the schedule's
set-up and the schedule's step are ``tryfirst`` so plugins see what they
publish (``state.warmup_steps``) and override what they set; the summary is
``trylast``. Unmarked built-ins (accounting, the progress display, tracking)
run after every plugin.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from hasten import schedules  # noqa: F401 - registers the core schedules
from hasten.accounting import format_macs
from hasten.config import Config
from hasten.errors import UserError
from hasten.hookspecs import hookimpl
from hasten.plugins import Plugin
from hasten.registry import REGISTRY
from hasten.state import Batch, State, StepOutput


class Defaults(Plugin):
    """What the engine does when no plugin takes over."""

    name = "defaults"

    @hookimpl(tryfirst=True)
    def hasten_setup(self, state: State) -> None:
        state.task.setup(state)  # before plugins' set-up: the task's parts are on the device

    @hookimpl(trylast=True)
    def hasten_batch_size(self, state: State, step: int) -> int:
        return state.batch_size

    @hookimpl(trylast=True)
    def hasten_views(self, state: State, batch: Batch) -> list[Any]:
        return state.task.views(state, batch)

    @hookimpl(trylast=True)
    def hasten_forward(self, state: State, batch: Batch) -> StepOutput:
        return state.task.forward(state, batch, state.train_model or state.model)

    @hookimpl(trylast=True)
    def hasten_evaluate(self, state: State) -> dict[str, float]:
        return state.task.evaluate(state)

    @hookimpl(tryfirst=True)
    def hasten_step_end(self, state: State, output: StepOutput) -> None:
        state.task.after_optimizer_step(state)


class Schedule(Plugin):
    """The core LR schedule (``schedule:``) and constant momentum (``optim.momentum``).

    Steps aside when an enabled plugin provides ``lr_schedule`` (e.g. f1clr),
    and refuses a config that sets both.
    """

    name = "schedule"

    def __init__(self, config: Config, lr_owner: str | None) -> None:
        super().__init__()
        self.config = config
        self.lr_owner = lr_owner
        if lr_owner is not None and "schedule" in config.model_fields_set:
            raise UserError(
                f"schedule: conflicts with plugin {lr_owner!r}, which sets the learning-rate schedule; "
                "remove the schedule section or the plugin"
            )
        sched = config.schedule
        self.function = REGISTRY.schedules.get(sched.name, key="schedule.name")
        self.warmup_steps = 0

    @hookimpl(tryfirst=True)
    def hasten_setup(self, state: State) -> None:
        # before every plugin's set-up: state.warmup_steps is final when plugins read it
        sched = self.config.schedule
        if sched.warmup_fraction is not None:
            self.warmup_steps = round(sched.warmup_fraction * state.total_steps)
        elif sched.warmup_steps is not None:
            self.warmup_steps = sched.warmup_steps
        if self.lr_owner is None:
            state.warmup_steps = self.warmup_steps if sched.name == "warmup_cosine" else 0
        if sched.name == "warmup_cosine" and not 0 < self.warmup_steps < state.total_steps:
            raise UserError(
                f"schedule.warmup_steps: warmup_cosine needs 0 < warm-up < {state.total_steps} total steps, "
                f"got {self.warmup_steps}"
            )

    @hookimpl(tryfirst=True)
    def hasten_step_start(self, state: State) -> None:
        if self.lr_owner is None:
            state.lr = self.function(
                state.step, state.total_steps, self.config.optim.lr, self.warmup_steps, self.config.schedule.final_lr
            )
        state.momentum = self.config.optim.momentum if self.config.optim.name == "sgd" else self.config.optim.betas[0]


class Accounting(Plugin):
    """Adds every step's training FLOPs (forward + backward) to ``state.flops``."""

    name = "accounting"

    @hookimpl
    def hasten_step_end(self, state: State, output: StepOutput) -> None:
        per_sample = state.task.forward_flops_per_sample(state.flops, state.resolution)
        state.flops.add_train(state.flops.train_step_flops(per_sample, output.num_samples))


class Progress(Plugin):
    """What a terminal shows (rank 0 only): where the run lives, the progress
    line (step, loss, img/s, the task's evaluation metric, ETA) and the
    end-of-run summary. ``enabled`` (run.progress, off with --quiet) shows the
    progress; ``summary`` (off only with --quiet) prints the summary at the end.
    """

    name = "progress"

    def __init__(self, enabled: bool, summary: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.summary = summary
        self.progress: Any = None
        self.task_id: Any = None
        self.started = 0.0
        self.first_step = 0
        self.last_print = 0.0
        self.train_info = ""
        #: the latest evaluation's (name, value) shown on the line: the same value the summary prints
        self.shown_metric: tuple[str, float] | None = None

    @hookimpl(trylast=True)
    def hasten_fit_start(self, state: State) -> None:
        # trylast: after every other fit_start, so tracking has opened the MLflow run
        self.started = time.perf_counter()
        self.first_step = state.step  # after a resume, the ETA counts only this process's steps
        if not (self.enabled and state.is_main):
            return
        print_banner(state)
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),  # where the banner and summary go (rich's default is stdout)
                transient=False,  # the final line stays on the screen
            )
            self.progress.start()
            self.task_id = self.progress.add_task("train", total=state.total_steps, completed=state.step, info="")

    @hookimpl
    def hasten_log(self, state: State, metrics: dict[str, float], step: int) -> None:
        if not (self.enabled and state.is_main):
            return
        if "train/loss" in metrics:
            self.train_info = f"loss {metrics['train/loss']:.4f}  {metrics.get('train/throughput', 0):.0f} img/s"
        else:  # an evaluation
            shown = evaluation_metric(state.config.eval.metric, metrics, state.task.metrics or ())
            if shown is None:
                return
            self.shown_metric = shown
        self._show(state, step, evaluated="train/loss" not in metrics)

    def _info(self) -> str:
        if self.shown_metric is None:
            return self.train_info
        name, value = self.shown_metric
        return f"{self.train_info}  {name} {_fmt(value)}"

    def _show(self, state: State, step: int, evaluated: bool) -> None:
        info = self._info()
        if self.progress is not None:
            self.progress.update(self.task_id, completed=step + 1, info=info)
            return
        now = time.perf_counter()
        # Plain lines when not a terminal: every evaluation (so the last line
        # carries the final metric), training lines at most every 10 s.
        if evaluated or now - self.last_print >= 10:
            self.last_print = now
            done = step + 1 - self.first_step
            eta = (now - self.started) / max(done, 1) * (state.total_steps - step - 1)
            print(f"step {step + 1}/{state.total_steps}  {info}  ETA {eta:.0f} s", file=sys.stderr, flush=True)

    @hookimpl(trylast=True)
    def hasten_fit_end(self, state: State) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, completed=state.step, info=self._info())
            self.progress.stop()
            self.progress = None
        if not (self.summary and state.is_main):
            return
        elapsed = time.perf_counter() - self.started
        rows = [("steps", f"{state.step}/{state.total_steps}"), ("wall time", f"{elapsed:.1f} s")]
        rows += [(k, format_macs(v) if k.startswith("flops/") else _fmt(v))
                 for k, v in sorted(state.metrics.items()) if k.startswith(("val/", "knn/", "flops/"))]
        if state.stop_reason:
            rows.append(("stopped", state.stop_reason))
        rows.append(("run dir", state.run_dir))
        tracking = state.scratch.get("tracking") or {}
        if tracking.get("run_id"):
            rows.append(("mlflow run", str(tracking["run_id"])))
        width = max(len(k) for k, _ in rows)
        print("\nsummary", file=sys.stderr)
        for key, value in rows:
            print(f"  {key:<{width}}  {value}", file=sys.stderr)
        sys.stderr.flush()


def evaluation_metric(
    configured: str, metrics: dict[str, float], task_metrics: tuple[str, ...] = ()
) -> tuple[str, float] | None:
    """The metric an evaluation is judged by: ``eval.metric`` when reported,
    else the task's first declared metric (``Task.metrics``) other than a loss
    (``knn/acc1`` for SSL, ``val/delta1`` for depth), not a plugin's
    evaluation (``ema/acc1``), which plugins report before the task."""
    if configured in metrics:
        return configured, float(metrics[configured])
    names = [k for k in task_metrics if k in metrics and not k.endswith("loss")]
    names = names or [k for k in metrics if not k.endswith("loss")] or list(metrics)
    return (names[0], float(metrics[names[0]])) if names else None


def print_banner(state: State) -> None:
    """One short block at the start: where the run's files and its MLflow record are."""
    rows = [("run dir", str(state.run_dir))]
    tracking = state.scratch.get("tracking")
    if tracking is None:
        rows.append(("tracking", "off (tracking.enabled: false)"))
    else:
        rows.append(("tracking", f"{tracking['uri']}  experiment {tracking.get('experiment')!r}"))
        run_id = tracking.get("run_id")
        rows.append(("mlflow run", run_id or f"not opened yet ({tracking.get('error') or 'server not answering'}); "
                     "the summary names it"))
        command, page = tracking.get("view") or (None, None)
        if command:
            rows.append(("view it", command))
        if page:
            rows.append(("run page", page))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", file=sys.stderr)
    sys.stderr.flush()


def _fmt(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value:.4g}"
    return f"{value:.4f}"
