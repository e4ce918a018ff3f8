"""``hasten compare RUN_OR_CONFIG...``: cost to equal accuracy, as docs/methods.md reports it.

Each argument is a config file (trained now, one after another, with
tracking on) or an MLflow run id (read from ``--uri``, default the tracking
URI hasten uses). Everything is then read back from MLflow: the evaluation
metric's history, and ``flops/total`` and ``time/elapsed``, which the
tracking plugin logs at every logged step, evaluations included.

The target defaults to the first run's (the baseline's) final metric. A
run's *FLOPs-to-target* and *time-to-target* are its cumulative FLOPs and
wall time at the first evaluation that reaches the target; speed-ups are the
baseline's cost to target divided by the run's ("Speed-up accounting":
baseline cost / method cost at equal accuracy, FLOPs with overhead included,
wall time beside it). One plot shows the metric against FLOPs for all runs.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hasten.errors import UserError

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")


@dataclass
class RunCost:
    """One run's result and costs, read from MLflow."""

    label: str
    run_id: str
    uri: str
    final: float
    steps: int
    total_flops: float
    wall_time: float
    curve: list[tuple[int, float, float, float]]  # (step, metric, flops/total, time/elapsed) per evaluation
    flops_to_target: float | None = None
    time_to_target: float | None = None
    step_to_target: int | None = None
    flops_speedup: float | None = None
    time_speedup: float | None = None
    #: classes of the training data (from the run's dataset input), for the chance level
    num_classes: int | None = None
    experiment: str | None = None

    def reach(self, target: float, higher_is_better: bool) -> None:
        self.flops_to_target = self.time_to_target = self.step_to_target = None
        for step, value, flops, elapsed in self.curve:
            if (value >= target) if higher_is_better else (value <= target):
                self.flops_to_target, self.time_to_target, self.step_to_target = flops, elapsed, step
                return


def _by_step(history: list[Any]) -> dict[int, float]:
    """step -> value, the latest logged value where a step was logged twice (resumes)."""
    return {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}


def read_run(uri: str, run_id: str, metric: str, label: str | None = None) -> RunCost:
    """A run's final metric, length, total cost and metric-vs-cost curve from MLflow."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
        values = _by_step(client.get_metric_history(run_id, metric))
        flops = _by_step(client.get_metric_history(run_id, "flops/total"))
        elapsed = _by_step(client.get_metric_history(run_id, "time/elapsed"))
    except MlflowException as exc:
        raise UserError(f"hasten compare: MLflow run {run_id!r} could not be read from {uri}: {exc.message}") from None
    if not values:
        raise UserError(
            f"hasten compare: run {run_id!r} logged no {metric!r}; pick the metric with --metric "
            f"(logged: {', '.join(sorted(run.data.metrics)) or 'none'})"
        )
    if not flops:
        raise UserError(f"hasten compare: run {run_id!r} logged no flops/total (was it trained by hasten?)")
    last = max(flops)
    curve = [(s, v, flops[s], elapsed.get(s, math.nan)) for s, v in sorted(values.items()) if s in flops]
    num_classes = None
    for dataset_input in run.inputs.dataset_inputs if run.inputs is not None else ():
        try:
            num_classes = int(json.loads(dataset_input.dataset.profile or "{}").get("num_classes") or 0) or None
        except (ValueError, TypeError):
            pass
    try:
        experiment = client.get_experiment(run.info.experiment_id).name
    except MlflowException:
        experiment = None
    return RunCost(
        label=label or (f"{run.info.run_name} ({run_id[:8]})" if run.info.run_name else run_id),
        num_classes=num_classes,
        experiment=experiment,
        run_id=run_id,
        uri=uri,
        final=values[max(values)],
        steps=last + 1,
        total_flops=flops[last],
        wall_time=elapsed.get(last, math.nan),
        curve=curve,
    )


def train_for_compare(path: str, overrides: list[str]) -> tuple[str, str]:
    """Train the config at ``path`` with tracking on; return (tracking URI, run id)."""
    from hasten.builtins.tracking import RunType
    from hasten.config import load_config
    from hasten.engine import train

    config = load_config(path, overrides)
    if not config.tracking.enabled:
        config.tracking.enabled = True  # compare reads the results back from MLflow
    result = train(config, extra_builtins=[RunType("compare")])
    info = result.state.scratch.get("tracking", {}) if result.state is not None else {}
    if not info.get("run_id") or info.get("unsent"):
        raise UserError(
            f"hasten compare: {path} trained, but its results did not reach MLflow at {info.get('uri')}; "
            f"send them with `hasten sync {result.run_dir}` and compare the run id"
        )
    return str(info["uri"]), str(info["run_id"])


def compare(
    items: list[str],
    *,
    uri: str | None = None,
    metric: str | None = None,
    target: float | None = None,
    lower_is_better: bool | None = None,
    overrides: list[str] | None = None,
    plot: str | Path | None = None,
    frontier: str | Path | None = None,
) -> dict[str, Any]:
    """Train the configs among ``items``, read every run, compute costs to target (and, with ``frontier``,
    each run's speed-up at equal accuracy against a `hasten sweep` frontier)."""
    from hasten.builtins.tracking import resolve_uri

    if not items:
        raise UserError("hasten compare: give at least one config file or MLflow run id")
    front = load_frontier(frontier) if frontier is not None else None
    if front is not None and Path(items[0]).suffix in CONFIG_SUFFIXES and Path(items[0]).is_file():
        from hasten.config import load_config

        expected = metric or load_config(items[0], overrides or []).eval.metric
        if expected != front["metric"]:  # refused before anything is trained
            raise UserError(f"--frontier: {front['source']} measures {front['metric']!r}, these runs "
                            f"{expected!r}; compare with --metric {front['metric']}")
    sources: list[tuple[str | None, str, str]] = []  # (label, uri, run id); run ids are labelled by run name
    for item in items:
        if Path(item).suffix in CONFIG_SUFFIXES or Path(item).is_file():
            if not Path(item).is_file():
                raise UserError(f"hasten compare: config file {item!r} not found")
            run_uri, run_id = train_for_compare(item, overrides or [])
            sources.append((item, run_uri, run_id))  # labelled by its MLflow run name, like a run id
        else:
            sources.append((None, resolve_uri(uri), item))
    if metric is None:
        from hasten.config import EvalConfig, load_config

        default_metric = str(EvalConfig.model_fields["metric"].default)

        first_label, first_uri, first_id = sources[0]
        if first_label is not None:
            metric = load_config(first_label, overrides or []).eval.metric
        else:
            metric = _logged_param(first_uri, first_id, "eval.metric") or default_metric
    runs = [read_run(u, r, metric) for _, u, r in sources]
    higher = not (lower_is_better if lower_is_better is not None else ("loss" in metric or "error" in metric))
    if target is None:
        target = runs[0].final
    for run in runs:
        run.reach(target, higher)
    base = runs[0]
    for run in runs:
        if base.flops_to_target and run.flops_to_target:
            run.flops_speedup = base.flops_to_target / run.flops_to_target
        if base.time_to_target and run.time_to_target:
            run.time_speedup = base.time_to_target / run.time_to_target
    report: dict[str, Any] = {
        "metric": metric,
        "target": target,
        "higher_is_better": higher,
        "runs": [{k: v for k, v in asdict(r).items() if k != "curve"} for r in runs],
        "warnings": target_warnings(runs, metric, target),
    }
    if front is not None:
        report["frontier"] = frontier_speedups(report, runs, front)
    if plot is not None:
        from hasten.builtins.plots import write_compare_plot

        curves = [(r.label, [c[2] for c in r.curve], [c[1] for c in r.curve]) for r in runs]
        experiments = sorted({r.experiment for r in runs if r.experiment})
        title = f"{metric}: {' vs '.join(r.label for r in runs)}"
        if experiments:
            title += f" (experiment {', '.join(experiments)})"
        report["plot"] = str(write_compare_plot(curves, metric, target, plot, title=title))
    return report


def load_frontier(path: str | Path) -> dict[str, Any]:
    """The baseline frontier of a `hasten sweep` (its folder or frontier.json): metric, baseline, points."""
    file = Path(path)
    if file.is_dir():
        file = file / "frontier.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        points = [(float(f), float(m)) for f, m in data["frontier"][data["baseline"]]]
        return {"source": str(file), "metric": str(data["metric"]), "baseline": str(data["baseline"]),
                "points": points}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"--frontier: {file} is not the frontier.json of a `hasten sweep` ({exc})") from None


def frontier_speedups(report: dict[str, Any], runs: list[RunCost], front: dict[str, Any]) -> dict[str, Any]:
    """Each run's final (FLOPs, metric) against the baseline frontier ``front`` (:func:`load_frontier`)."""
    from dataclasses import asdict as as_dict

    from hasten.frontier import speedup_against

    if front["metric"] != report["metric"]:
        raise UserError(f"--frontier: {front['source']} measures {front['metric']!r}, these runs "
                        f"{report['metric']!r}; compare with --metric {front['metric']}")
    out: dict[str, Any] = {"source": front["source"], "baseline": front["baseline"], "runs": []}
    for run in runs:
        # The run's total FLOPs include its evaluations (compare reads flops/total): the speed-up is a slight
        # under-estimate; `hasten sweep` itself leaves evaluation out.
        result = speedup_against(front["points"], run.total_flops, run.final, report["higher_is_better"])
        out["runs"].append({"label": run.label, **as_dict(result), "text": result.text()})
    return out


#: a target within this factor of chance (1 / classes) says little about learning
NEAR_CHANCE = 1.5


def target_warnings(runs: list[RunCost], metric: str, target: float) -> list[str]:
    """Why the speed-ups may mislead: a target near chance accuracy, or runs that never reach it."""
    warnings = []
    classes = next((r.num_classes for r in runs if r.num_classes), None)
    if classes and "acc" in metric and target <= NEAR_CHANCE / classes:
        warnings.append(
            f"the target {metric} {target:.4f} is near chance ({1 / classes:.4f} for {classes} classes): "
            "the runs barely learned, so the speed-ups say little; train longer or set --target"
        )
    for run in runs:
        if run.flops_to_target is None:
            warnings.append(f"{run.label} never reached the target: no speed-up for it; lower --target or train longer")
    return warnings


def _logged_param(uri: str, run_id: str, key: str) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri).get_run(run_id).data.params.get(key)
    except MlflowException:
        return None


def _num(value: float | None, fmt: str, missing: str = "not reached") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def format_table(report: dict[str, Any]) -> str:
    from hasten.commands.estimate import _flops

    metric = report["metric"]
    sign = ">=" if report["higher_is_better"] else "<="
    header = ["run", f"final {metric}", "steps", "total MACs", "wall time", "MACs to target", "compute speed-up",
              "time to target", "wall-time speed-up"]
    front_texts = [item["text"] for item in report["frontier"]["runs"]] if "frontier" in report else None
    if front_texts is not None:
        header.append("frontier speed-up")
    rows = [header]
    for index, run in enumerate(report["runs"]):
        rows.append([
            run["label"],
            f"{run['final']:.4f}",
            str(run["steps"]),
            _flops(run["total_flops"]),
            _num(run["wall_time"], ".1f") + " s",
            "not reached" if run["flops_to_target"] is None else _flops(run["flops_to_target"]),
            _num(run["flops_speedup"], ".2f", "-") + ("x" if run["flops_speedup"] else ""),
            "not reached" if run["time_to_target"] is None else f"{run['time_to_target']:.1f} s",
            _num(run["time_speedup"], ".2f", "-") + ("x" if run["time_speedup"] else ""),
        ] + ([front_texts[index]] if front_texts is not None else []))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"target: {metric} {sign} {report['target']:.4f}"
             + (" (the first run's final value)" if report.get("target_is_default") else "")]
    for index, row in enumerate(rows):
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("compute speed-up = the first run's multiply-adds to target / this run's (fvcore MACs, "
                 "overhead included)")
    lines.append("wall-time speed-up = the first run's training time to target / this run's")
    if "frontier" in report:
        front = report["frontier"]
        lines.append(f"frontier speed-up = the multiply-adds the {front['baseline']} frontier of {front['source']} "
                     "needs for this run's final metric (interpolated) / this run's total multiply-adds")
    lines += [f"warning: {w}" for w in report.get("warnings", ())]
    if "plot" in report:
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    report = compare(
        args.runs,
        uri=args.uri,
        metric=args.metric,
        target=args.target,
        lower_is_better=True if args.lower_is_better else None,
        overrides=args.overrides,
        plot=args.plot,
        frontier=args.frontier,
    )
    report["target_is_default"] = args.target is None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def add_command(subparsers: Any) -> None:
    from hasten.commands.arguments import add_override_argument

    parser = subparsers.add_parser(
        "compare", help="train configs and/or read MLflow runs; table of cost to the baseline's accuracy, and a plot"
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_CONFIG",
                        help="config files (trained now, in order) or MLflow run ids; the first is the baseline")
    parser.add_argument("--uri", default=None, help="tracking URI of the run ids (default: as hasten train)")
    parser.add_argument("--metric", default=None, help="evaluation metric (default: eval.metric, val/acc1)")
    parser.add_argument("--target", type=float, default=None, help="target value (default: the first run's final)")
    parser.add_argument("--lower-is-better", action="store_true", help="the metric improves downwards (losses)")
    parser.add_argument("--plot", default="hasten-compare.png", metavar="PATH", help="PNG of metric vs FLOPs")
    add_override_argument(parser, help="override a value in every config given (repeatable)")
    parser.add_argument("--frontier", default=None, metavar="SWEEP_DIR",
                        help="a `hasten sweep` folder (or its frontier.json): speed-up against its baseline frontier")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=cmd_compare)
