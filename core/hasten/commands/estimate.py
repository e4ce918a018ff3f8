"""``hasten estimate CONFIG``: the FLOPs a run will cost, without training it.

The run is built as ``hasten train`` would build it (model, data, plugins,
with tracking and progress off and a throw-away run directory), then every
planned step is walked: ``state.step`` is set, ``hasten_step_start`` lets the
schedules set that step's resolution, ``hasten_batch_size`` says what the
stream would deliver and ``hasten_plan_step`` collects the overhead each
plugin would add. Training FLOPs follow the accounting convention of
:mod:`hasten.accounting`: ``forward_flops_per_sample(resolution) x 3 x
trained samples`` (``state.batch_size`` per rank x world size). No model runs
except fvcore's counting, once per input shape.

The same walk on the config with every plugin removed gives the baseline;
the ratio of the two is the planned cost. A plugin's own closed-form estimate
of the plan (progressive's eq. 3.9 of docs/methods.md) comes from its
``hasten_plan_summary`` and is printed beside the counted figure: the core
computes no plugin's formula.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from hasten.accounting import MAC_PREFIXES
from hasten.config import Config
from hasten.errors import UserError


@dataclass
class Phase:
    """Consecutive steps at one resolution."""

    first_step: int
    last_step: int
    resolution: int
    train_flops: float = 0.0
    overhead_flops: float = 0.0

    @property
    def steps(self) -> int:
        return self.last_step - self.first_step + 1

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": self.steps, "total_flops": self.train_flops + self.overhead_flops}


@dataclass
class Plan:
    """Planned cost of one config (global figures: all ranks together)."""

    steps: int
    batch_size: int
    max_resolution: int
    train_flops: float = 0.0
    #: samples the training stream delivers (candidate batches included): the loader's work
    samples_loaded: int = 0
    overhead: dict[str, float] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    #: each step's resolution
    resolutions: list[int] = field(default_factory=list)
    #: the plugins' own estimates of the plan (``hasten_plan_summary``): key -> (figures, text lines)
    summaries: dict[str, tuple[dict[str, Any], list[str]]] = field(default_factory=dict)

    @property
    def overhead_flops(self) -> float:
        return sum(self.overhead.values())

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.overhead_flops

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "max_resolution": self.max_resolution,
            "train_flops": self.train_flops,
            "overhead_flops": self.overhead_flops,
            "total_flops": self.total_flops,
            "samples_loaded": self.samples_loaded,
            "overhead": dict(self.overhead),
            "phases": [p.as_dict() for p in self.phases],
        }


@contextmanager
def _dry_config(config: Config, *, without_plugins: bool) -> Iterator[Config]:
    """A copy of ``config`` that builds quietly: no tracking, no progress, no
    checkpoints, a temporary run directory (removed afterwards)."""
    copy = config.model_copy(deep=True)
    copy.source = config.source
    with tempfile.TemporaryDirectory(prefix="hasten-estimate-") as run_dir:
        copy.tracking.enabled = False
        copy.run.progress = False
        copy.run.checkpoint_every = None
        copy.run.run_dir = run_dir
        if without_plugins:
            copy.plugins = {}
        yield copy


def plan(config: Config) -> Plan:
    """Walk every planned step of ``config`` and add up its FLOPs (see module doc)."""
    from hasten.engine import Trainer

    trainer = Trainer(config)  # a Trainer of its own: the walk's state changes stay in it
    try:
        result = _walk(trainer)
        for part in trainer.hooks.hasten_plan_summary(state=trainer.state, resolutions=list(result.resolutions)):
            if part:
                result.summaries[str(part["key"])] = (dict(part.get("figures", {})), list(part.get("lines", [])))
        return result
    finally:
        trainer.close()


def _walk(trainer: Any) -> Plan:
    state, hooks = trainer.state, trainer.hooks
    world = state.world_size
    result = Plan(steps=state.total_steps, batch_size=state.batch_size * world, max_resolution=state.max_resolution)
    per_sample: dict[int, float] = {}
    phase: Phase | None = None
    for step in range(state.total_steps):
        state.step = step
        state.epoch = step // state.steps_per_epoch
        hooks.hasten_step_start(state=state)
        delivered = hooks.hasten_batch_size(state=state, step=step)
        resolution = int(state.resolution)
        forward = per_sample.get(resolution)
        if forward is None:
            forward = per_sample[resolution] = state.task.forward_flops_per_sample(state.flops, resolution)
        train = state.flops.train_step_flops(forward, state.batch_size * world)
        overhead = 0.0
        for part in hooks.hasten_plan_step(state=state, step=step, batch_size=delivered):
            for name, value in (part or {}).items():
                # plugins answer per rank, like the accountant they report to in training
                result.overhead[name] = result.overhead.get(name, 0.0) + float(value) * world
                overhead += float(value) * world
        result.train_flops += train
        result.samples_loaded += int(delivered if delivered is not None else state.batch_size) * world
        if phase is None or phase.resolution != resolution:
            phase = Phase(step, step, resolution)
            result.phases.append(phase)
        phase.last_step = step
        phase.train_flops += train
        phase.overhead_flops += overhead
        result.resolutions.append(resolution)
    return result


def estimate(config: Config) -> dict[str, Any]:
    """The planned cost of ``config`` and of the same config without plugins."""
    return estimate_with_notes(config)[0]


def estimate_with_notes(config: Config) -> tuple[dict[str, Any], list[str]]:
    """:func:`estimate`, and the text lines of the plugins' own estimates (``hasten_plan_summary``)."""
    with _dry_config(config, without_plugins=False) as dry:
        planned = plan(dry)
    with _dry_config(config, without_plugins=True) as dry:
        try:
            baseline = plan(dry)
        except UserError as exc:
            raise UserError(f"hasten estimate: the config without its plugins is not valid: {exc}") from None
    report: dict[str, Any] = {
        "config": planned.as_dict(),
        "baseline": baseline.as_dict(),
        "ratio": planned.total_flops / baseline.total_flops if baseline.total_flops else float("nan"),
        "speedup": baseline.total_flops / planned.total_flops if planned.total_flops else float("nan"),
    }
    notes: list[str] = []
    for key, (figures, lines) in planned.summaries.items():
        report[key] = figures
        notes += lines
    report["varying_resolution"] = len({p.resolution for p in planned.phases}) > 1
    return report, notes


def _flops(value: float) -> str:
    for unit, scale in MAC_PREFIXES[:-1]:
        if abs(value) >= scale:
            return f"{value / scale:.3f} {unit}"
    return f"{value:.0f} "


def format_report(report: dict[str, Any], source: str, notes: Sequence[str] = ()) -> str:
    """The text report; ``notes``: the plugins' own estimates, printed beside the counted speed-up."""
    cfg, base = report["config"], report["baseline"]
    lines = [
        f"hasten estimate: {source}",
        f"  {cfg['steps']} steps, global batch {cfg['batch_size']}, full resolution {cfg['max_resolution']} px",
        "  FLOPs: fvcore multiply-adds, training step = 3x forward (backward = 2x forward)",
        "",
        f"  {'':<12}{'train':>16}{'overhead':>16}{'total':>16}",
    ]
    for label, part in (("config", cfg), ("no plugins", base)):
        lines.append(
            f"  {label:<12}{_flops(part['train_flops']):>16}{_flops(part['overhead_flops']):>16}"
            f"{_flops(part['total_flops']):>16}"
        )
    lines.append("")
    lines.append(f"  ratio (config / no plugins): {report['ratio']:.4f}   speed-up: {report['speedup']:.3f}x")
    for name, value in sorted(cfg["overhead"].items()):
        lines.append(f"  overhead {name}: {_flops(value)}FLOPs ({value / max(cfg['total_flops'], 1e-30):.2%} of total)")
    lines += ["", "  phases (config):", f"  {'steps':<20}{'resolution':>12}{'total FLOPs':>16}{'share':>10}"]
    for phase in cfg["phases"]:
        span = f"{phase['first_step']}-{phase['last_step']} ({phase['steps']})"
        share = phase["total_flops"] / max(cfg["total_flops"], 1e-30)
        lines.append(f"  {span:<20}{phase['resolution']:>12}{_flops(phase['total_flops']):>16}{share:>10.1%}")
    if notes:
        lines += ["", *(f"  {note}" for note in notes),
                  f"  counted (fvcore, whole run incl. overhead): {report['speedup']:.3f}x"]
    return "\n".join(lines)


def cmd_estimate(args: argparse.Namespace) -> int:
    from hasten.config import load_config

    config = load_config(args.config, args.overrides)
    report, notes = estimate_with_notes(config)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report, args.config, notes))
    return 0


def add_command(subparsers: Any) -> None:
    from hasten.commands.arguments import add_config_arguments

    parser = subparsers.add_parser(
        "estimate", help="planned FLOPs of a config (train, overhead, total) against the config without plugins"
    )
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=cmd_estimate)
