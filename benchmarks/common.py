"""Shared benchmark helpers: run recipes over seeds, summarise them, write RESULTS.md sections.

Three parts, used by every script in ``benchmarks/``:

* :func:`run_recipes` trains named recipes (config dicts or files, plus
  ``--set`` overrides) for several seeds through ``hasten compare``'s
  machinery (:func:`hasten.commands.compare.train_for_compare` trains with
  MLflow tracking on, :func:`~hasten.commands.compare.read_run` reads the
  metric-vs-cost curve back). The curves are corrected for *evaluation*
  cost: ``flops/total`` and ``time/elapsed`` include every evaluation so far
  (the SSL kNN feature pass is an overhead of the accountant), which is a
  measurement cost, not a training cost, and would pull every speed-up
  towards 1. The :class:`EvalClock` plugin, enabled in every benchmark run,
  wraps ``hasten_evaluate`` and logs the cumulative evaluation FLOPs and
  seconds at each evaluation, and they are subtracted here.
* :func:`summarize` / :func:`markdown_table`: per recipe the median and the
  spread (min-max) across seeds of the final metric, FLOPs-to-target and
  time-to-target, and the speed-ups against the recipe's baseline, with the
  target = the baseline's median final metric (docs/methods.md "Speed-up
  accounting": baseline cost / method cost at equal accuracy, FLOPs with
  selection/mining overhead included).
* :func:`write_section`: writes or replaces a named section of
  ``benchmarks/RESULTS.md`` (machine, date, exact command, table, plot path).
  A ``notes`` block inside each section is kept across reruns: the analysis
  text the lead writes there survives a new measurement. ``--quick`` runs
  write to ``benchmarks/results/smoke/RESULTS.md`` instead, marked as smoke
  runs, so RESULTS.md only ever holds measurements.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import math
import os
import platform
import re
import shlex
import statistics
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RESULTS_FILE = BENCH / "RESULTS.md"
RESULTS_DIR = BENCH / "results"
SMOKE_DIR = RESULTS_DIR / "smoke"

try:  # run from a checkout without `pip install -e .`: use the core package next to this file
    import hasten  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    sys.path.insert(0, str(REPO / "core"))

import torch  # noqa: E402

from hasten.builtins.tracking import git_commit  # noqa: E402
from hasten.commands.sweep import EVAL_FLOPS, EVAL_SECONDS, STUDY_OUTPUT, EvalClock  # noqa: E402
from hasten.plugins import installed_plugins, register_plugin  # noqa: E402

SMOKE_MARK = "(smoke run, not a measurement)"


def shared_datasets() -> Path:
    """``$HASTEN_SHARED_DATA``, else ``../shared/datasets`` beside the repository."""
    return Path(os.environ.get("HASTEN_SHARED_DATA") or REPO.parent / "shared" / "datasets")


# ----------------------------------------------------------------- plugins
def ensure_plugins(names: Sequence[str]) -> None:
    """Make the repository's plugins ``names`` usable without installing them.

    A plugin that is installed (entry point) is left alone; otherwise its
    package under ``plugins/<name>`` is put on ``sys.path`` and its class,
    named by the entry point in its pyproject.toml, registered in code.
    """
    found = installed_plugins()
    for name in names:
        info = found.get(name)
        if info is not None and info.plugin_class is not None:
            continue
        root = REPO / "plugins" / name
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
        target = project["project"]["entry-points"]["hasten.plugins"][name]
        module_name, _, class_name = target.partition(":")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        module = __import__(module_name, fromlist=[class_name])
        register_plugin(getattr(module, class_name), distribution=f"{root.relative_to(REPO)} (in code)")


# ----------------------------------------------------------------- recipes
@dataclass
class Research:
    """What the research reports for a recipe, for the verdict column.

    ``low``/``high`` bound the published FLOPs speed-up; ``kind`` says which of
    our columns it corresponds to: ``to_target`` (cost to the baseline's
    accuracy) or ``total`` (total training FLOPs of the fixed-length runs,
    as the SSL component table reports it).
    """

    text: str
    low: float | None = None
    high: float | None = None
    kind: str = "to_target"


@dataclass
class Recipe:
    """A named training recipe: a config dict or file, plus ``--set`` overrides."""

    name: str
    config: dict[str, Any] | str | Path
    overrides: list[str] = field(default_factory=list)
    #: the recipe this one is compared to; None: this recipe is a baseline (target = its median final)
    baseline: str | None = None
    research: Research | None = None


@dataclass
class RecipeRuns:
    recipe: Recipe
    seeds: list[int]
    runs: list[Any]  # hasten.commands.compare.RunCost, curves corrected for evaluation cost


def _config_file(recipe: Recipe, config_dir: Path) -> Path:
    if not isinstance(recipe.config, dict):
        return Path(recipe.config)
    import yaml

    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', recipe.name)}.yaml"
    path.write_text(
        f"# written by benchmarks/common.py for recipe {recipe.name!r}; the seed is set with --set run.seed\n"
        + yaml.safe_dump(recipe.config, sort_keys=False),
        encoding="utf-8",
    )
    return path


def _cumulative(client: Any, run_id: str, key: str) -> dict[int, float]:
    from hasten.commands.compare import _by_step

    return _by_step(client.get_metric_history(run_id, key))


def evaluation_corrected(run: Any) -> Any:
    """``run`` (a RunCost) with the evaluation FLOPs and seconds taken out of its curve and totals."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=run.uri)
    eval_flops = _cumulative(client, run.run_id, EVAL_FLOPS)
    eval_seconds = _cumulative(client, run.run_id, EVAL_SECONDS)

    def at(table: dict[int, float], step: int) -> float:
        earlier = [s for s in table if s <= step]
        return table[max(earlier)] if earlier else 0.0

    curve = [
        (step, value, flops - at(eval_flops, step), elapsed - at(eval_seconds, step))
        for step, value, flops, elapsed in run.curve
    ]
    last = run.steps - 1
    return replace(
        run,
        curve=curve,
        total_flops=run.total_flops - at(eval_flops, last),
        wall_time=run.wall_time - at(eval_seconds, last),
    )


def run_recipes(
    recipes: Sequence[Recipe],
    seeds: Sequence[int],
    *,
    workdir: Path,
    metric: str,
    overrides: Sequence[str] = (),
    experiment: str = "benchmarks",
    plugins: Sequence[str] = (),
) -> dict[str, RecipeRuns]:
    """Train every recipe for every seed (seed-major order, so a partial run
    covers all recipes) and read the runs back, evaluation cost removed.

    Runs go to ``workdir/runs``, MLflow to ``sqlite:///workdir/mlflow.db``,
    the recipes' resolved configs to ``workdir/configs``.
    """
    from hasten.commands.compare import read_run, train_for_compare

    ensure_plugins(plugins)
    if "eval_clock" not in installed_plugins():
        register_plugin(EvalClock)
    workdir.mkdir(parents=True, exist_ok=True)
    common = [
        f"tracking.uri=sqlite:///{(workdir / 'mlflow.db').resolve()}",
        f"tracking.experiment={experiment}",
        "tracking.artifacts=false",
        f"run.output_dir={workdir / 'runs'}",
        "plugins.eval_clock={}",
    ]
    files = {r.name: _config_file(r, workdir / "configs") for r in recipes}
    out = {r.name: RecipeRuns(r, [], []) for r in recipes}
    for seed in seeds:
        for recipe in recipes:
            print(f"=== {recipe.name}, seed {seed}", flush=True)
            extra = [*common, f"run.seed={seed}", f"run.name={experiment}-{recipe.name}-s{seed}",
                     *recipe.overrides, *overrides]
            uri, run_id = train_for_compare(str(files[recipe.name]), extra)
            run = evaluation_corrected(read_run(uri, run_id, metric, label=f"{recipe.name} s{seed}"))
            out[recipe.name].seeds.append(seed)
            out[recipe.name].runs.append(run)
            print(f"    final {metric} {run.final:.4f}, {run.steps} steps, train FLOPs {run.total_flops:.3e}, "
                  f"{run.wall_time:.0f} s (evaluation excluded)", flush=True)
    return out


# ----------------------------------------------------------------- summary
def _median(values: Sequence[float]) -> float:
    """Median where ``inf`` stands for "not reached" (a majority not reached gives inf)."""
    return float(statistics.median(values)) if values else math.nan


@dataclass
class Summary:
    name: str
    baseline: str  # the recipe it is compared to (itself for a baseline)
    target: float
    steps: list[int]
    final: list[float]
    flops_to_target: list[float]  # inf = not reached
    time_to_target: list[float]
    total_flops: list[float]
    wall_time: list[float]
    flops_speedup: list[float]  # baseline median cost to target / this seed's cost (0 = not reached)
    time_speedup: list[float]
    total_flops_ratio: float  # baseline median total FLOPs / this recipe's median total FLOPs
    research: Research | None

    @property
    def reached(self) -> int:
        return sum(math.isfinite(v) for v in self.flops_to_target)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "research"}
        out["research"] = None if self.research is None else self.research.__dict__
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def summarize(results: dict[str, RecipeRuns], higher_is_better: bool = True) -> list[Summary]:
    """Per recipe: medians and spreads across seeds, costs to its baseline's median final metric."""
    rows = []
    for name, entry in results.items():
        base_name = entry.recipe.baseline or name
        base = results[base_name]
        target = _median([r.final for r in base.runs])
        for run in [*base.runs, *entry.runs]:
            run.reach(target, higher_is_better)

        def cost(runs: list[Any], key: str) -> list[float]:
            return [math.inf if getattr(r, key) is None else float(getattr(r, key)) for r in runs]

        base_flops, base_time = _median(cost(base.runs, "flops_to_target")), _median(cost(base.runs, "time_to_target"))
        flops, seconds = cost(entry.runs, "flops_to_target"), cost(entry.runs, "time_to_target")
        rows.append(Summary(
            name=name,
            baseline=base_name,
            target=target,
            steps=[r.steps for r in entry.runs],
            final=[r.final for r in entry.runs],
            flops_to_target=flops,
            time_to_target=seconds,
            total_flops=[r.total_flops for r in entry.runs],
            wall_time=[r.wall_time for r in entry.runs],
            flops_speedup=[base_flops / f if math.isfinite(base_flops) else math.nan for f in flops],
            time_speedup=[base_time / t if math.isfinite(base_time) else math.nan for t in seconds],
            total_flops_ratio=_median([r.total_flops for r in base.runs])
            / _median([r.total_flops for r in entry.runs]),
            research=entry.recipe.research,
        ))
    return rows


def _flops(value: float) -> str:
    from hasten.commands.estimate import _flops as format_flops

    return "not reached" if not math.isfinite(value) else format_flops(value).strip()


def _spread(values: Sequence[float], fmt: Any, suffix: str = "") -> str:
    """``median [min-max]`` (finite values for the range; the median counts inf as not reached)."""
    if not values:
        return "-"
    middle = _median(values)
    finite = [v for v in values if math.isfinite(v)]
    head = "not reached" if not math.isfinite(middle) else fmt(middle) + suffix
    if len(values) == 1 or not finite:
        return head
    return f"{head} [{fmt(min(finite))}{suffix}-{fmt(max(finite))}{suffix}]"


def verdict(row: Summary) -> str:
    """How the measured speed-up compares with the research's figure."""
    research = row.research
    if research is None:
        return "-"
    if research.low is None:
        return research.text
    measured = _median(row.flops_speedup) if research.kind == "to_target" else row.total_flops_ratio
    if research.kind == "to_target" and row.reached * 2 <= len(row.final):
        where = "did not reach the target (disagrees)"
    elif not math.isfinite(measured):
        where = "n/a"
    elif measured < research.low:
        where = f"{measured:.2f}x: below (disagrees)"
    elif research.high is not None and measured > research.high:
        where = f"{measured:.2f}x: above"
    else:
        where = f"{measured:.2f}x: within (agrees)"
    return f"{research.text}; {where}"


def _speedup_cell(speedups: Sequence[float]) -> str:
    """Median [min-max] of per-seed speed-ups; a seed that never reached the target counts as the worst."""
    if not any(math.isfinite(v) for v in speedups):
        return "-"
    middle = _median([v if math.isfinite(v) else 0.0 for v in speedups])
    head = f"{middle:.2f}x" if middle > 0 else "not reached"
    finite = [v for v in speedups if math.isfinite(v) and v > 0]
    if len(speedups) == 1 or not finite:
        return head
    return f"{head} [{min(finite):.2f}x-{max(finite):.2f}x]"


def markdown_table(rows: Sequence[Summary], metric: str) -> str:
    """The result table: medians with [min-max] across seeds."""
    lines = [
        f"| recipe | steps | final {metric} | reached target | FLOPs to target | FLOPs speed-up | "
        "time to target | time speed-up | training FLOPs (total) | total FLOPs ratio | research |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        is_base = row.baseline == row.name
        name = f"**{row.name}** (baseline)" if is_base else f"{row.name} (vs {row.baseline})"
        lines.append(" | ".join([
            f"| {name}",
            _spread(row.steps, lambda v: f"{v:.0f}"),
            _spread(row.final, lambda v: f"{v:.4f}"),
            f"{row.reached}/{len(row.final)}",
            _spread(row.flops_to_target, _flops),
            _speedup_cell(row.flops_speedup),
            _spread(row.time_to_target, lambda v: f"{v:.0f}" if v >= 100 else f"{v:.1f}", " s"),
            _speedup_cell(row.time_speedup),
            _spread(row.total_flops, _flops),
            f"{row.total_flops_ratio:.2f}x",
            verdict(row),
        ]) + " |")
    targets = sorted({(r.baseline, r.target) for r in rows})
    lines.append("")
    lines.append("Targets (each baseline's median final " + metric + "): "
                 + ", ".join(f"{name} {value:.4f}" for name, value in targets) + ".")
    lines.append(
        "Values: median [min-max] across seeds. Costs exclude evaluation (kNN/validation passes) and include "
        "selection/mining overhead; FLOPs are fvcore multiply-adds, a training step = 3x forward. "
        "Speed-up = the baseline's median cost to target / this recipe's cost to target, per seed (a seed that "
        "never reaches the target has no speed-up; a median over seeds that mostly did not reach it is 'not "
        "reached'). Total FLOPs ratio = baseline median total / this recipe's median total (fixed-length runs, "
        "as the research's SSL table reports speed-ups)."
    )
    return "\n".join(lines)


def write_plot(results: dict[str, RecipeRuns], metric: str, targets: dict[str, float], path: Path) -> Path:
    """Metric against training FLOPs (evaluation excluded): per recipe, the seed with the median final value."""
    from hasten.builtins.plots import write_compare_plot

    curves = []
    for name, entry in results.items():
        order = sorted(range(len(entry.runs)), key=lambda i: entry.runs[i].final)
        run = entry.runs[order[len(order) // 2]]
        curves.append((f"{name} (seed {entry.seeds[order[len(order) // 2]]})", [c[2] for c in run.curve],
                       [c[1] for c in run.curve]))
    target = next(iter(targets.values())) if len(set(targets.values())) == 1 else None
    return write_compare_plot(curves, metric, target, path)


# ----------------------------------------------------------------- RESULTS.md
def machine_info() -> str:
    """Platform, CPU count, threads, torch version, GPU (or none), git commit, load average."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    found = git_commit(REPO, ignore=STUDY_OUTPUT)  # the code's commit, as the study's records name it
    commit = "?" if found is None else found[0][:7] + (" (uncommitted changes)" if found[1] else "")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), GPU: {gpu}; commit {commit}; "
            f"load average when written {load}")


def command_line() -> str:
    """The command that is running, as typed from the repository root."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(REPO)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def _markers(name: str) -> tuple[str, str, str]:
    return (f"<!-- section: {name} -->", f"<!-- notes: {name} (kept when the section is rewritten) -->",
            f"<!-- end section: {name} -->")


DEFAULT_NOTES = ("_Analysis (written by hand, kept across reruns): does this agree with the research? "
                 "Where it does not, why?_")
HEADER = """# Benchmark results

Every number here is written by the script whose command stands in its
section (`benchmarks/common.py: write_section`); rerunning the command
replaces the section in place. Only the text between a section's *notes*
marker and its end marker is written by hand, and it is kept across reruns.
How to run each benchmark: benchmarks/README.md.
"""


def results_path(quick: bool, given: str | Path | None = None) -> Path:
    """Where a run writes its section: ``given``, else RESULTS.md, or the smoke file for ``--quick``."""
    if given is not None:
        return Path(given)
    return SMOKE_DIR / "RESULTS.md" if quick else RESULTS_FILE


def write_section(
    name: str,
    title: str,
    body: str,
    *,
    quick: bool = False,
    path: str | Path | None = None,
    plot: str | Path | None = None,
    command: str | None = None,
) -> Path:
    """Write (or replace in place) section ``name`` of the results file; returns the file.

    The section holds the title, the machine, the date, the command, ``body``
    (Markdown) and the plot; the existing notes block of the section, if any,
    is carried over unchanged.
    """
    target = results_path(quick, path)
    begin, notes_mark, end = _markers(name)
    text = target.read_text(encoding="utf-8") if target.is_file() else HEADER
    notes = DEFAULT_NOTES
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    found = pattern.search(text)
    if found is not None:
        old = found.group(0)
        if notes_mark in old:
            notes = old.split(notes_mark, 1)[1].rsplit(end, 1)[0].strip("\n") or DEFAULT_NOTES
    parts = [
        begin,
        f"## {title}" + (f" {SMOKE_MARK}" if quick else ""),
        "",
        f"- machine: {machine_info()}",
        f"- date: {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command or command_line()}`",
        "",
        body.strip("\n"),
        "",
    ]
    if plot is not None:
        plot_path = Path(plot).resolve()
        with contextlib.suppress(ValueError):
            plot_path = plot_path.relative_to(target.resolve().parent)
        parts += [f"![{title}]({plot_path.as_posix()})", ""]
    parts += [notes_mark, notes, end]
    section = "\n".join(parts)
    if found is not None:
        text = text[: found.start()] + section + text[found.end():]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote section {name!r} to {target}")
    return target


def code_block(text: str) -> str:
    """Plain-text output as a Markdown code block."""
    return "```\n" + text.strip("\n") + "\n```"


class _Tee(io.TextIOBase):
    def __init__(self, stream: Any) -> None:
        self.stream, self.buffer_ = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.buffer_.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    @property
    def text(self) -> str:
        return self.buffer_.getvalue()


@contextlib.contextmanager
def tee() -> Iterator[_Tee]:
    """Print as usual and keep a copy of what was printed (``.text``) for :func:`write_section`."""
    copy = _Tee(sys.stdout)
    with contextlib.redirect_stdout(copy):
        yield copy


def run_study(main: Any) -> int:
    """``main()`` of a long study, with ``hasten``'s exit codes: a stop (SIGTERM, SIGINT at a session's end) or a
    refused input prints one line instead of a traceback; the study's records are kept, and a rerun continues."""
    from hasten.errors import TrainingStopped, UserError

    try:
        return int(main() or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TrainingStopped as exc:
        print(f"stopped: {exc}; run the same command again to continue", file=sys.stderr)
        return exc.exit_code
