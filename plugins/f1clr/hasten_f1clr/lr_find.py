"""The LR range test (``hasten lr-find``), used to pick F1-CLR's ``max_lr`` (docs/methods.md section 2).

A throw-away copy of the run trains for ``steps`` steps while the LR grows
exponentially, ``lr_t = lr_min * (lr_max / lr_min) ** (t / (steps - 1))``
(default 1e-3 -> 1 over 200 steps). At every step it records the training
loss, its exponentially smoothed value (debiased, like Adam's moments) and the
loss on one fixed validation batch (no grad, eval mode except that BatchNorm
uses the batch's own statistics, its running buffers untouched). The sweep
stops early once the smoothed training loss exceeds 4x its best value (the
loss diverges).

Suggestions (see :func:`suggest_lrs`) are read from the training loss under a
centred running median (5% of the sweep, 11 steps of 200): unlike the EMA it
does not lag the LR, and single-batch spikes do not move it:

* **min LR**: where the loss starts to fall, the first LR at which the loss
  has covered 10% of its fall from its highest point before the minimum to
  the minimum;
* **max LR**: where it starts to diverge, the LR of the minimum loss (beyond
  it the loss only rises).

Both lie inside the sweep by construction. Nothing of the trained model is
kept: only the curves, the suggestions and the plot.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import hasten
from hasten.api import (
    Config,
    Trainer,
    TrainingInterrupted,
    TrainingStopped,
    UserError,
    eval_batch,
    is_image_batch,
    model_unchanged,
    plugin_provides,
    tracking_run_id,
    tracking_uri,
    validate_config,
)

#: EMA factor of the smoothed training loss (torch-lr-finder's 0.05 smoothing)
SMOOTHING = 0.95
#: the sweep stops when the smoothed loss exceeds this multiple of its best value (fastai's rule)
DIVERGE_FACTOR = 4.0
#: min LR = first LR where the loss has covered this fraction of its fall
FALL_FRACTION = 0.10
#: a fall below this fraction of the peak loss is flagged as hardly a fall (noise level)
HARDLY_FELL = 0.05

MIN_RULE = (
    f"first LR where the training loss (centred running median) has covered {FALL_FRACTION:.0%} of its fall "
    "from its peak to its minimum: where the loss starts to fall"
)
MAX_RULE = (
    "LR of the minimum training loss (centred running median); beyond it the loss rises: where it starts to diverge"
)


# ------------------------------------------------------------ pure functions
def exponential_lrs(lr_min: float, lr_max: float, steps: int) -> list[float]:
    """The sweep: ``lr_t = lr_min * (lr_max / lr_min) ** (t / (steps - 1))`` for t = 0 .. steps - 1."""
    ratio = lr_max / lr_min
    return [lr_min * ratio ** (t / (steps - 1)) for t in range(steps)]


def smooth(values: list[float], beta: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average: ``m_t = beta m_{t-1} + (1 - beta) x_t``, ``m_t / (1 - beta^(t+1))``."""
    out, average = [], 0.0
    for t, value in enumerate(values):
        average = beta * average + (1.0 - beta) * value
        out.append(average / (1.0 - beta ** (t + 1)))
    return out


def running_median(values: list[float], window: int) -> list[float]:
    """Centred running median over ``window`` steps (truncated at the ends): no lag, robust to loss spikes."""
    half = window // 2
    return [statistics.median(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]


def median_window(steps: int) -> int:
    """The suggestion's median window: 5% of the sweep, odd, at least 5 steps (11 for 200 steps)."""
    return max(5, steps // 20) | 1


@dataclass
class Suggestion:
    """Suggested LRs, their positions in the sweep, the rules used and any caveats."""

    min_lr: float
    max_lr: float
    min_index: int
    max_index: int
    notes: list[str] = field(default_factory=list)
    min_rule: str = MIN_RULE
    max_rule: str = MAX_RULE


def suggest_lrs(
    lrs: list[float], losses: list[float], *, reached_end: bool = True, window: int | None = None
) -> Suggestion:
    """Suggest the min and max LR from the raw training losses of a sweep (see the module docstring).

    Only the leading finite losses are used. ``reached_end`` says whether the
    sweep ran to its last LR (not stopped by divergence): a minimum at the very
    end then means the loss was still falling. ``window``: the running median's
    width, by default :func:`median_window` of ``len(lrs)`` (pass the planned
    sweep length when the sweep stopped early).
    """
    finite = 0
    while finite < len(losses) and math.isfinite(losses[finite]):
        finite += 1
    if finite == 0:
        raise ValueError("no finite training loss recorded; lower --min-lr")
    curve_window = window or median_window(len(lrs))
    curve = running_median(losses[:finite], curve_window)
    lowest = min(range(finite), key=curve.__getitem__)
    peak = max(range(lowest + 1), key=curve.__getitem__)
    notes = []
    drop = curve[peak] - curve[lowest]
    if drop <= 0.0:
        start = lowest
        notes.append("the loss never fell during the sweep: lower --min-lr or check the data and model")
    else:
        threshold = curve[peak] - FALL_FRACTION * drop
        start = next(i for i in range(peak, lowest + 1) if curve[i] <= threshold)
        if drop < HARDLY_FELL * curve[peak]:
            notes.append(
                f"the loss hardly fell ({drop / curve[peak]:.1%} of its peak): the suggestions are uncertain; "
                "sweep to a higher --max-lr or for more --steps"
            )
    if lowest >= finite - curve_window and reached_end and finite == len(losses):
        notes.append("the loss was still falling at the end of the sweep: the max LR may be higher (raise --max-lr)")
    return Suggestion(min_lr=lrs[start], max_lr=lrs[lowest], min_index=start, max_index=lowest, notes=notes)


# --------------------------------------------------------- the helper plugin
class RangeTest(hasten.Plugin):
    """Drives the sweep inside a normal engine run (passed to the Trainer as an extra built-in).

    Sets the exponential LR at every step (after every other schedule), records
    the losses and asks the engine to stop when the smoothed loss diverges.
    """

    name = "lr_find"

    def __init__(self, lr_min: float, lr_max: float, steps: int, val_samples: int) -> None:
        super().__init__()
        self.lrs = exponential_lrs(lr_min, lr_max, steps)
        self.val_samples = val_samples
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.val_losses: list[torch.Tensor] = []
        self.best = math.inf
        self._average = 0.0
        self.val_batch: hasten.Batch | None = None
        self.batch_norms: list[torch.nn.modules.batchnorm._BatchNorm] = []

    @hasten.hookimpl
    def hasten_setup(self, state: hasten.State) -> None:
        state.run_type = "lr-find"  # tagged hasten.run_type in MLflow
        self.val_batch = fixed_validation_batch(state, self.val_samples)
        batch_norm = torch.nn.modules.batchnorm._BatchNorm
        self.batch_norms = [m for m in state.model.modules() if isinstance(m, batch_norm) and m.track_running_stats]

    @hasten.hookimpl(trylast=True)
    def hasten_step_start(self, state: hasten.State) -> None:
        state.lr = self.lrs[state.step]

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        # One host sync per step: the divergence rule decides after every step.
        loss = float(output.loss.detach())
        self.losses.append(loss)
        self._average = SMOOTHING * self._average + (1.0 - SMOOTHING) * loss
        smoothed = self._average / (1.0 - SMOOTHING ** len(self.losses))
        self.smoothed.append(smoothed)
        self.val_losses.append(self._validation_loss(state))
        if not math.isfinite(smoothed) or smoothed > DIVERGE_FACTOR * self.best:
            state.should_stop = "diverged"
        self.best = min(self.best, smoothed)

    def _validation_loss(self, state: hasten.State) -> torch.Tensor:
        assert self.val_batch is not None
        # Eval mode (no dropout, no stochastic depth), except that BatchNorm normalises with the batch's own
        # statistics: during a sweep the running averages lag weights that change fast, and an eval-mode
        # loss then spikes by several nats with the LR. With track_running_stats off, BatchNorm neither
        # reads nor updates its buffers, so the training run's statistics stay as they are.
        with model_unchanged(state.model) as model:
            for module in self.batch_norms:
                module.training, module.track_running_stats = True, False
            try:
                loss = state.task.forward(state, self.val_batch, model).loss.detach().float()
            finally:
                for module in self.batch_norms:
                    module.track_running_stats = True
        return loss

    def validation_losses(self) -> list[float]:
        return torch.stack(self.val_losses).tolist() if self.val_losses else []


def fixed_validation_batch(state: hasten.State, samples: int) -> hasten.Batch:
    """The first ``samples`` validation images with their inputs prepared once.

    Single-view tasks (classification) see the evaluation transform (resize and
    normalise, no augmentation); multi-view tasks (SSL) get one fixed draw of
    their training views, from a generator of their own so the run's random
    stream is left alone.
    """
    batch = next(iter(state.data.val_batches(samples))).to(state.device)
    if not is_image_batch(batch.images):  # vector data
        batch.views = [batch.images.float()]
    elif state.task.num_views == 1:
        info = state.task.info
        batch.views = [eval_batch(batch.images, state.max_resolution, info.mean, info.std)]
    else:
        run_generator = state.generator
        state.generator = torch.Generator(device=state.device).manual_seed(state.seed + 104729)
        try:
            batch.views = state.task.views(state, batch)
        finally:
            state.generator = run_generator
    return batch


# ------------------------------------------------------------------ the run
@dataclass
class LRFindResult:
    """The curves of a sweep, the suggestion and where the plot went."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    val_losses: list[float]
    suggestion: Suggestion
    sweep: tuple[float, float, int]
    stop_reason: str | None
    run_dir: str
    plot: str | None
    tracked_run: str | None = None


def lr_find_config(config: Config, steps: int) -> Config:
    """The throw-away run's config: ``config`` without its LR schedule, ``steps`` long, no checkpoints."""
    data: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True)
    data.pop("schedule", None)

    def sets_lr(name: str) -> bool:
        return name == "f1clr" or plugin_provides(name, "lr_schedule")

    data["plugins"] = {name: settings for name, settings in (data.get("plugins") or {}).items() if not sets_lr(name)}
    run = data.setdefault("run", {})
    run.pop("epochs", None)
    run["max_steps"] = steps
    run["name"] = f"{config.run.name}-lr-find"
    run["checkpoint_every"] = None
    run["final_checkpoint"] = False
    if config.run.run_dir:
        run["run_dir"] = f"{config.run.run_dir.rstrip('/')}-lr-find"
    evaluation = data.setdefault("eval", {})
    evaluation["every_steps"] = steps + 1  # no evaluation during the sweep; the engine's final one is one batch
    evaluation["max_batches"] = 1
    # The sweep's weights are thrown away: the tracking run gets the curves and the plot, not weights.pt.
    data.setdefault("tracking", {})["artifacts"] = False
    return validate_config(data, source=config.source)


def lr_find(
    config: Config,
    *,
    min_lr: float = 1e-3,
    max_lr: float = 1.0,
    steps: int = 200,
    val_samples: int = 256,
    plot: str | Path | None = None,
) -> LRFindResult:
    """Run the LR range test on ``config`` and return the curves and the suggested LRs.

    Writes the plot to ``plot`` (default ``RUN_DIR/lr_find.png``) and, when
    ``tracking.enabled``, logs it to MLflow. Single process only.
    """
    if not min_lr > 0:
        raise UserError(f"--min-lr: must be > 0, got {min_lr}")
    if not max_lr > min_lr:
        raise UserError(f"--max-lr: must be above --min-lr ({min_lr}), got {max_lr}")
    if steps < 2:
        raise UserError(f"--steps: need at least 2 steps, got {steps}")
    if val_samples < 1:
        raise UserError(f"--val-samples: must be >= 1, got {val_samples}")
    sweep_config = lr_find_config(config, steps)
    helper = RangeTest(min_lr, max_lr, steps, val_samples)
    trainer = Trainer(sweep_config, extra_builtins=[helper])
    state = trainer.state
    stop_reason: str | None
    try:
        stop_reason = trainer.fit().stop_reason
    except TrainingInterrupted:  # SIGINT/SIGTERM: the user stopped the sweep
        raise
    except TrainingStopped as stopped:  # a non-finite loss: the end of the sweep, not a failure
        stop_reason = f"diverged: {stopped}"
    recorded = len(helper.losses)
    try:
        suggestion = suggest_lrs(
            helper.lrs[:recorded], helper.losses, reached_end=recorded == steps, window=median_window(steps)
        )
    except ValueError as exc:  # not one finite loss: the sweep started above any usable LR
        raise UserError(f"--min-lr: {min_lr} already diverges: {exc}") from None
    result = LRFindResult(
        lrs=helper.lrs[:recorded],
        losses=helper.losses,
        smoothed=helper.smoothed,
        val_losses=helper.validation_losses(),
        suggestion=suggestion,
        sweep=(min_lr, max_lr, steps),
        stop_reason=stop_reason,
        run_dir=state.run_dir,
        plot=None,
    )
    path = Path(plot) if plot is not None else Path(state.run_dir) / "lr_find.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_lr_find(result, path)
    result.plot = str(path)
    if sweep_config.tracking.enabled:
        result.tracked_run = log_to_mlflow(result, sweep_config, tracking_run_id(state))
    return result


# -------------------------------------------------------------- outputs
def plot_lr_find(result: LRFindResult, path: str | Path) -> None:
    """Both curves against the LR (log x), with the suggested min and max LR marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(figure)  # Agg without pyplot: no global state, no display needed
    axes = figure.add_subplot()
    axes.plot(result.lrs, result.losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="training loss")
    axes.plot(result.lrs, result.smoothed, color="tab:blue", label="training loss (smoothed)")
    axes.plot(result.lrs, result.val_losses, color="tab:orange", label="validation loss (fixed batch)")
    s = result.suggestion
    axes.axvline(s.min_lr, color="tab:green", linestyle="--", label=f"suggested min LR {s.min_lr:.3g}")
    axes.axvline(s.max_lr, color="tab:red", linestyle="--", label=f"suggested max LR {s.max_lr:.3g}")
    # Divergence makes the last values huge: keep the range up to where the loss doubled its best in view.
    best = min((v for v in result.smoothed if math.isfinite(v)), default=math.nan)
    shown = next((i for i, v in enumerate(result.smoothed) if not v <= 2 * best), len(result.smoothed))
    in_view = [v for v in [*result.smoothed[:shown], *result.val_losses[:shown]] if math.isfinite(v)]
    if in_view:
        low, high = min(in_view), max(in_view)
        margin = 0.1 * (high - low) or 0.05 * abs(high) or 0.1
        axes.set_ylim(low - margin, high + margin)
    axes.set_xscale("log")
    lo, hi, steps = result.sweep
    axes.set_xlim(lo, hi)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    reason = (result.stop_reason or "").split(":")[0]
    stopped = f", stopped after {len(result.lrs)} steps: {reason}" if result.stop_reason else ""
    axes.set_title(f"LR range test: {lo:g} -> {hi:g} over {steps} steps{stopped}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def log_to_mlflow(result: LRFindResult, config: Config, sweep_run_id: str | None) -> str:
    """Log the plot, the suggestions and the curves to MLflow; returns the run id.

    ``sweep_run_id`` is the sweep's own MLflow run (already closed), which
    gets them. Without one (the server was unreachable, or another tracker
    replaced the built-in), a run of its own is opened in ``tracking.experiment``.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(config))
    run_id: str = sweep_run_id or ""
    own_run = not run_id
    if own_run:
        experiment = client.get_experiment_by_name(config.tracking.experiment)
        experiment_id = (
            experiment.experiment_id if experiment is not None else client.create_experiment(config.tracking.experiment)
        )
        run_id = client.create_run(experiment_id, run_name=config.run.name).info.run_id
    s = result.suggestion
    lo, hi, steps = result.sweep
    params = [Param("lr_find.sweep", f"{lo:g} -> {hi:g} over {steps} steps"), Param("lr_find.min_rule", s.min_rule),
              Param("lr_find.max_rule", s.max_rule)]
    stamp = int(time.time() * 1000)
    metrics = [Metric("lr_find/suggested_min_lr", s.min_lr, stamp, 0),
               Metric("lr_find/suggested_max_lr", s.max_lr, stamp, 0)]
    for step, (lr, smoothed, val) in enumerate(zip(result.lrs, result.smoothed, result.val_losses)):
        for key, value in (("lr", lr), ("smoothed_loss", smoothed), ("val_loss", val)):
            if math.isfinite(value):
                metrics.append(Metric(f"lr_find/{key}", value, stamp, step))
    client.log_batch(run_id, params=params)
    for start in range(0, len(metrics), 1000):  # MLflow accepts at most 1000 metrics per request
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    assert result.plot is not None
    client.log_artifact(run_id, result.plot)
    if own_run:
        client.set_terminated(run_id)
    return run_id


def format_report(result: LRFindResult) -> str:
    """What ``hasten lr-find`` prints."""
    lo, hi, steps = result.sweep
    s = result.suggestion
    ended = f"stopped after {len(result.lrs)} steps: {result.stop_reason}" if result.stop_reason else "ran to the end"
    lines = [
        f"LR range test: {lo:g} -> {hi:g} over {steps} steps ({ended})",
        f"suggested min LR: {s.min_lr:.4g}  (step {s.min_index}; rule: {s.min_rule})",
        f"suggested max LR: {s.max_lr:.4g}  (step {s.max_index}; rule: {s.max_rule})",
    ]
    finite_val = [(v, i) for i, v in enumerate(result.val_losses) if math.isfinite(v)]
    if finite_val:
        best_val, at = min(finite_val)
        lines.append(f"lowest validation loss (fixed batch): {best_val:.4f} at LR {result.lrs[at]:.4g}")
    lines += [f"note: {note}" for note in s.notes]
    lines.append(f"plot: {result.plot}")
    if result.tracked_run:
        lines.append(f"MLflow run: {result.tracked_run}")
    return "\n".join(lines)


def cli_lr_find(args: argparse.Namespace) -> int:
    """``hasten lr-find CONFIG [--set KEY=VALUE] [--min-lr] [--max-lr] [--steps] [--val-samples] [--plot]``."""
    from hasten.api import load_config

    config = load_config(args.config, args.overrides)
    result = lr_find(
        config,
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        steps=args.steps,
        val_samples=args.val_samples,
        plot=args.plot,
    )
    print(format_report(result), flush=True)
    return 0
