"""``hasten sweep CONFIG [MORE ...] --budgets 0.25 0.5 0.75 1 --seeds 3``: accuracy-vs-compute frontiers.

Each config is trained at each *budget* (a fraction of its length, every run
fully annealed at its own length: the schedule spans the shortened run) and
seed. One (config, budget, seed) is one MLflow run, tagged with the config's
hash (:func:`recipe_hash`), the budget and the seed, and one JSON record in
``OUT/records/``; a sweep started again skips every run that has either, so a
stopped or killed sweep continues where it was and nothing finished is
trained twice. A run killed half-way continues from its newest checkpoint
(``run.checkpoint_every``, or the one a SIGINT/SIGTERM writes) when its folder
was made by the same run (:data:`SWEEP_RUN_FILE`: run hash and seed);
without one it is trained again from its start, and a folder of another run
is kept, renamed, never deleted.

Costs are *training* costs: the FLOPs and seconds spent in evaluation (the
validation pass, the SSL kNN bank) are measured by :class:`EvalClock` and
taken out, since measuring a run more often must not make it look dearer.
The frontier table gives, per config and budget, the median and spread
(min-max) over seeds of the metric, training FLOPs, wall time, images loaded
and the training-set accuracy; the plot draws the metric against training
FLOPs (log x), a line per config and a band over seeds. Both are written to
OUT and logged as artifacts of an MLflow run tagged ``hasten.run_type:
sweep``. The first config is the baseline: every other config's speed-up at
equal accuracy against its frontier is printed (:mod:`hasten.frontier`).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from hasten.checkpoint import has_checkpoints
from hasten.commands.components import check_optimizer_name
from hasten.config import Config, load_config
from hasten.errors import UserError
from hasten.frontier import Point, speedup_against
from hasten.hookspecs import hookimpl
from hasten.plugins import Plugin
from hasten.rundir import RunDirLock
from hasten.state import State

#: config keys that name, place or display a run without changing what it trains (left out of the hash)
NOT_THE_RECIPE = (
    "run.seed", "run.name", "run.output_dir", "run.run_dir", "run.progress", "run.threads", "run.log_every",
    "run.checkpoint_every", "run.keep_checkpoints", "run.record_indices", "tracking",
    "eval.every_steps",  # when a run is measured, not what it trains (final values are what a sweep keeps)
    "run.channels_last",  # a memory layout: the same math, only float rounding differs (as with run.threads)
)
#: what a study writes into the checkout it trains from (its RESULTS.md section, its committed records): its
#: output, not a change to the code that trained it, so neither makes a record's code commit "+dirty"
STUDY_OUTPUT = ("*.md", "benchmarks/results")
#: written in a sweep run's folder before it trains: which (run hash, seed) the folder's checkpoints belong to
SWEEP_RUN_FILE = "sweep-run.json"
EVAL_FLOPS = "eval/flops"
EVAL_SECONDS = "eval/seconds"


class EvalClock(Plugin):
    """Cumulative evaluation FLOPs and seconds, logged with every evaluation, and the run's own seconds.

    A hook wrapper around every ``hasten_evaluate`` implementation (the task's
    included): the FLOPs the accountant gained and the seconds that passed
    while evaluating are added up, kept here and returned as two more metrics,
    so they are logged in the same ``hasten_log`` call as the costs that
    include them. Costs minus these are training costs. :attr:`run_seconds`
    adds up the seconds since ``hasten_fit_start`` over every process a
    resumed run had (the time after its last checkpoint, trained again, is
    counted once), so a resumed run's wall time is the whole run's.
    """

    name = "eval_clock"

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.flops = 0.0
        self.seconds = 0.0
        self.earlier_seconds = 0.0  # the run's seconds before this process (from the checkpoint)
        self.started: float | None = None

    @property
    def run_seconds(self) -> float:
        return self.earlier_seconds + (0.0 if self.started is None else time.perf_counter() - self.started)

    @hookimpl
    def hasten_fit_start(self, state: State) -> None:
        self.started = time.perf_counter()

    @hookimpl(wrapper=True)
    def hasten_evaluate(self, state: State) -> Any:
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)
        started, flops_before = time.perf_counter(), state.flops.total
        results = yield
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)
        self.seconds += time.perf_counter() - started
        self.flops += (state.flops.total - flops_before) * state.world_size  # flops.total is per rank
        return [*results, {EVAL_FLOPS: self.flops, EVAL_SECONDS: self.seconds}]

    @hookimpl
    def hasten_state_dict(self, state: State) -> dict[str, Any]:
        return {self.name: {"flops": self.flops, "seconds": self.seconds, "run_seconds": self.run_seconds}}

    @hookimpl
    def hasten_load_state_dict(self, state: State, blob: dict[str, Any]) -> None:
        mine = blob.get(self.name) or {}
        self.flops = float(mine.get("flops", 0.0))
        self.seconds = float(mine.get("seconds", 0.0))
        self.earlier_seconds = float(mine.get("run_seconds", 0.0))


# ------------------------------------------------------------------ identity
def recipe_hash(config: Config) -> str:
    """12 hex digits naming what ``config`` trains: the settings it sets away from their defaults (its
    length included), without the seed and the keys that only name, place or display a run
    (:data:`NOT_THE_RECIPE`). Only non-default values count, so a setting added to hasten later, with a
    default, leaves the hashes of earlier sweeps, and so their records, valid."""
    flat = config.flat(exclude_defaults=True)
    kept = {
        key: value for key, value in flat.items()
        if not any(key == skip or key.startswith(skip + ".") for skip in NOT_THE_RECIPE)
    }
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def with_budget(config: Config, budget: float) -> Config:
    """``config`` shortened to ``budget`` of its length (run.max_steps or run.epochs)."""
    out = config.model_copy(deep=True)
    if config.run.epochs is not None:
        out.run.epochs = config.run.epochs * budget
    else:
        out.run.max_steps = max(1, round((config.run.max_steps or 0) * budget))
    return out


# ------------------------------------------------------------------ records
@dataclass
class SweepRecord:
    """One finished (config, budget, seed) run."""

    label: str
    config_hash: str
    budget: float
    seed: int
    steps: int
    metric: str
    value: float
    train_flops: float  # evaluation excluded, overheads (selection scoring, mining) included
    wall_time: float  # seconds, evaluation excluded
    images_loaded: float
    run_id: str | None
    tracking_uri: str | None
    trainset_acc1: float | None = None
    trainset_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    finished_at: str = ""
    code_commit: str | None = None  # git commit of the checkout that trained it ("+dirty" with local changes)
    #: hash of the run as trained (the config with its budget applied): the same run under another config's
    #: budget (e.g. 1/2 of a length-80 config = all of a length-40 one) is reused, not trained again
    run_hash: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def budget_text(budget: float) -> str:
    return f"{budget:g}"


def record_path(out: Path, label: str, config_hash: str, budget: float, seed: int) -> Path:
    return out / "records" / f"{_slug(label)}-{config_hash}" / f"b{budget_text(budget)}-s{seed}.json"


def run_dir_path(out: Path, label: str, config_hash: str, budget: float, seed: int) -> Path:
    """The folder a sweep trains (label, budget, seed) in: its checkpoints, if the config keeps any."""
    return out / "runs" / f"{_slug(label)}-{config_hash}-b{budget_text(budget)}-s{seed}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "config"


def write_record(path: Path, record: SweepRecord) -> None:
    """Atomically: a kill while writing leaves no half-written record (it would count as done)."""
    write_json(path, asdict(record))


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, atomically (written beside it, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(path)


def read_record(path: Path) -> SweepRecord | None:
    try:
        return SweepRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def find_finished_run(uri: str, experiment: str, config_hash: str, budget: float, seed: int) -> Any:
    """The FINISHED MLflow run of (config hash, budget, seed) in ``experiment``, or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from hasten.builtins.tracking_store import prepare_store

    prepare_store(uri)  # created atomically under its lock: sweeps started together must not race MLflow's own
    client = MlflowClient(tracking_uri=uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=(
                f"tags.`hasten.sweep.config_hash` = '{config_hash}' and tags.`hasten.sweep.budget` = "
                f"'{budget_text(budget)}' and tags.`hasten.sweep.seed` = '{seed}' and attributes.status = 'FINISHED'"
            ),
            max_results=1,
        )
    except MlflowException:
        return None
    return runs[0] if runs else None


# ------------------------------------------------------------------ running
@dataclass
class SweepConfig:
    label: str
    path: str
    config: Config
    config_hash: str


def prepare(paths: Sequence[str], overrides: Sequence[str], budgets: Sequence[float], seeds: int,
            labels: Sequence[str] | None = None) -> list[SweepConfig]:
    """Validate the command line and load every config; :class:`UserError` naming the argument."""
    if not paths:
        raise UserError("hasten sweep: CONFIG: give at least one config file")
    if not budgets:
        raise UserError("hasten sweep: --budgets: give at least one budget in (0, 1]")
    bad = [b for b in budgets if not (0 < b <= 1) or not math.isfinite(b)]
    if bad:
        raise UserError(f"hasten sweep: --budgets: {bad[0]:g} is outside (0, 1]; a budget is a fraction of the "
                        "config's length (1 = the full length)")
    repeated = sorted({budget_text(b) for b in budgets if list(budgets).count(b) > 1})
    if repeated:
        raise UserError(f"hasten sweep: --budgets: {', '.join(repeated)} given more than once; each budget once")
    if seeds < 1:
        raise UserError(f"hasten sweep: --seeds: {seeds} is not a number of seeds; allowed: 1 or more")
    if labels is not None and len(labels) != len(paths):
        raise UserError(f"hasten sweep: --labels: {len(labels)} labels for {len(paths)} configs; one per config")
    out: list[SweepConfig] = []
    for index, path in enumerate(paths):
        if not Path(path).is_file():
            raise UserError(f"hasten sweep: CONFIG: config file {path!r} not found")
        config = load_config(path, list(overrides))
        check_optimizer_name(config)
        if config.run.max_steps is None and config.run.epochs is None:
            raise UserError(f"{path}: run.max_steps or run.epochs must be set: a sweep's budgets are fractions "
                            "of that length")
        label = labels[index] if labels is not None else Path(path).stem
        out.append(SweepConfig(label, path, config, recipe_hash(config)))
    metrics = {c.config.eval.metric for c in out}
    if len(metrics) > 1:
        listing = ", ".join(f"{c.path}: {c.config.eval.metric}" for c in out)
        raise UserError(f"hasten sweep: CONFIG: the configs measure different metrics ({listing}); "
                        "a frontier compares one eval.metric (set it with --set eval.metric=...)")
    names = [c.label for c in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"hasten sweep: CONFIG: two configs are labelled {twice[0]!r}; give --labels")
    hashes = [c.config_hash for c in out]
    same = sorted({h for h in hashes if hashes.count(h) > 1})
    if same:
        which = [c.path for c in out if c.config_hash == same[0]]
        raise UserError(f"hasten sweep: CONFIG: {' and '.join(which)} train the same recipe (hash {same[0]}); "
                        "give each recipe once")
    return out


def higher_is_better(metric: str) -> bool:
    return not ("loss" in metric or "error" in metric or "abs_rel" in metric)


@functools.cache
def code_commit() -> str | None:
    """The checkout's git commit, 12 digits, "+dirty" with local changes (what a record names); None without git.

    Read once per process, at its first run: the code a process trains with is what it loaded, so a checkout
    made while a long sweep runs must not relabel its later records."""
    from hasten.builtins.tracking import git_commit

    commit = git_commit(ignore=STUDY_OUTPUT)
    return None if commit is None else commit[0][:12] + ("+dirty" if commit[1] else "")


def run_one(entry: SweepConfig, budget: float, seed: int, out: Path, log: Any = print) -> SweepRecord:
    """Train ``entry`` at ``budget`` and ``seed`` (tracked, tagged), write and return its record."""
    from hasten.builtins.tracking import resolve_uri
    from hasten.engine import train

    config = with_budget(entry.config, budget)
    trained_hash = recipe_hash(config)
    config.run.seed = seed
    config.run.name = f"{entry.label}-b{budget_text(budget)}-s{seed}"
    run_dir = run_dir_path(out, entry.label, entry.config_hash, budget, seed)
    resume = continues(run_dir, trained_hash, seed)
    log("continuing from its checkpoint" if resume else "training")
    if run_dir.exists() and not resume:  # not this run's, or nothing to continue from: kept, out of the way
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.unfinished-{stamp}"))
    if not resume:
        run_dir.mkdir(parents=True)
        write_json(run_dir / SWEEP_RUN_FILE, {"run_hash": trained_hash, "seed": seed})
    config.run.run_dir = str(run_dir)
    config.tracking.enabled = True  # every sweep run is an MLflow run
    config.tracking.tags = {
        **config.tracking.tags,
        "hasten.run_type": "sweep",
        "hasten.sweep.config_hash": entry.config_hash,
        "hasten.sweep.budget": budget_text(budget),
        "hasten.sweep.seed": str(seed),
        "hasten.sweep.label": entry.label,
        "hasten.sweep.run_hash": trained_hash,
    }
    clock = EvalClock()
    commit = code_commit()
    result = train(config, resume=resume, extra_builtins=[clock])
    if result.stop_reason is not None or result.state is None:
        raise UserError(f"hasten sweep: {entry.path} at budget {budget_text(budget)}, seed {seed} did not finish: "
                        f"{result.stop_reason}; nothing recorded for it")
    state = result.state
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metric = config.eval.metric
    if metric not in metrics:
        raise UserError(f"eval.metric: {metric!r} was not produced by the run of {entry.path} "
                        f"(produced: {', '.join(sorted(k for k in metrics if '/' in k))})")
    info = state.scratch.get("tracking", {})
    record = SweepRecord(
        label=entry.label,
        config_hash=entry.config_hash,
        budget=budget,
        seed=seed,
        steps=result.steps,
        metric=metric,
        value=metrics[metric],
        train_flops=state.flops.total * state.world_size - clock.flops,
        wall_time=clock.run_seconds - clock.seconds,
        images_loaded=float(state.images_loaded * state.world_size),
        run_id=info.get("run_id"),
        tracking_uri=portable_uri(resolve_uri(config.tracking.uri)),
        trainset_acc1=metrics.get("trainset/acc1"),
        trainset_loss=metrics.get("trainset/loss"),
        metrics={k: v for k, v in metrics.items() if k.startswith(("val/", "trainset/", "knn/"))},
        finished_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        code_commit=commit,
        run_hash=trained_hash,
    )
    write_record(record_path(out, entry.label, entry.config_hash, budget, seed), record)
    return record


def continues(run_dir: Path, run_hash: str, seed: int) -> bool:
    """Whether ``run_dir`` holds a checkpoint of this very run (same run hash and seed) to continue from."""
    try:
        made_by = json.loads((run_dir / SWEEP_RUN_FILE).read_text())
    except (OSError, ValueError):
        return False  # no marker (or one a kill cut short): whose checkpoints these are is unknown
    return made_by == {"run_hash": run_hash, "seed": seed} and has_checkpoints(run_dir)


def portable_uri(uri: str) -> str:
    """A local SQLite URI relative to the working directory when the file lies below it (records are
    committed: they must not name one machine's folders)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri[len(prefix):])
        try:
            return prefix + str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return uri
    return uri


def record_from_mlflow(run: Any, entry: SweepConfig, budget: float, seed: int, uri: str) -> SweepRecord | None:
    """A record rebuilt from a finished, tagged MLflow run (its record file was lost)."""
    data = run.data.metrics
    metric = entry.config.eval.metric
    if metric not in data or "flops/total" not in data:
        return None
    return SweepRecord(
        label=entry.label, config_hash=entry.config_hash, budget=budget, seed=seed,
        steps=int(float(run.data.params.get("run.total_steps", 0))), metric=metric, value=float(data[metric]),
        train_flops=float(data["flops/total"]) - float(data.get(EVAL_FLOPS, 0.0)),
        wall_time=float(data.get("time/elapsed", math.nan)) - float(data.get(EVAL_SECONDS, 0.0)),
        images_loaded=float(data.get("train/images_loaded", math.nan)), run_id=run.info.run_id,
        tracking_uri=portable_uri(uri),
        trainset_acc1=data.get("trainset/acc1"), trainset_loss=data.get("trainset/loss"),
        metrics={k: float(v) for k, v in data.items() if k.startswith(("val/", "trainset/", "knn/"))},
        finished_at="(from MLflow)",
        run_hash=run.data.tags.get("hasten.sweep.run_hash"),
    )


def plan(entries: Sequence[SweepConfig], budgets: Sequence[float], seeds: int) -> list[tuple[SweepConfig, float, int]]:
    """(config, budget, seed) in the order trained: seed-major, so a partial sweep covers every config."""
    return [(e, b, e.config.run.seed + k) for k in range(seeds) for e in entries for b in sorted(budgets)]


def run_plan(items: Sequence[tuple[SweepConfig, float, int]], out: Path, log: Any = print) -> list[SweepRecord]:
    """Train every planned run that is not done yet (no record in ``out``, no finished tagged MLflow run)."""
    from hasten.builtins.tracking import resolve_uri

    records: list[SweepRecord] = []
    trained = {(str(r.run_hash), r.seed): r for r in read_records(out) if r.run_hash}  # runs reusable by any config
    for number, (entry, budget, seed) in enumerate(items, 1):
        where = record_path(out, entry.label, entry.config_hash, budget, seed)
        name = (f"[{number}/{len(items)}] {entry.label} (hash {entry.config_hash}), budget {budget_text(budget)}, "
                f"seed {seed}")
        record = read_record(where) if where.is_file() else None
        same = trained.get((recipe_hash(with_budget(entry.config, budget)), seed))
        if record is None and same is not None:
            record = replace(same, label=entry.label, config_hash=entry.config_hash, budget=budget)
            write_record(where, record)
            log(f"{name}: the same run as {same.label} at budget {budget_text(same.budget)}: reused")
        if record is None:
            uri = resolve_uri(entry.config.tracking.uri)
            found = find_finished_run(uri, entry.config.tracking.experiment, entry.config_hash, budget, seed)
            if found is not None:
                record = record_from_mlflow(found, entry, budget, seed, uri)
                if record is not None:
                    write_record(where, record)
        if record is not None:
            log(f"{name}: done already, skipped ({record.metric} {record.value:.4f})")
            records.append(record)
            continue
        claim = run_claim(out, entry, budget, seed)
        try:
            claim.acquire()
        except UserError:
            log(f"{name}: being trained by another process ({claim_owner(claim)}), skipped")
            continue
        try:
            record = read_record(where) if where.is_file() else None  # finished by the other process meanwhile
            if record is None:
                record = run_one(entry, budget, seed, out, log=lambda how, name=name: log(f"{name}: {how}"))
                log(f"{name}: {record.metric} {record.value:.4f}, {record.steps} steps, "
                    f"{record.train_flops:.3e} training FLOPs, {record.wall_time:.0f} s")
            trained[(str(record.run_hash), seed)] = record
        finally:
            claim.release()
        records.append(record)
    return records


def run_claim(out: Path, entry: SweepConfig, budget: float, seed: int) -> RunDirLock:
    """The lock a sweep process holds while it trains (entry, budget, seed): ``<run folder>.claim`` beside the
    run's folder (not in it: a folder of another run is renamed aside), so that several processes sweeping into
    one OUT share the runs instead of training one twice. The kernel drops it when its process dies."""
    run_dir = run_dir_path(out, entry.label, entry.config_hash, budget, seed)
    return RunDirLock(run_dir.parent, name=run_dir.name + ".claim")


def claim_owner(claim: RunDirLock) -> str:
    try:
        return claim.path.read_text(encoding="utf-8").strip() or "unknown pid"
    except OSError:
        return "unknown pid"


def in_training(out: Path, entry: SweepConfig, budget: float, seed: int) -> str | None:
    """Who trains (entry, budget, seed) right now ("pid N on HOST"), or None when no live process claims it."""
    claim = run_claim(out, entry, budget, seed)
    try:
        claim.acquire()
    except UserError:
        return claim_owner(claim)
    claim.release()
    return None


def run_sweep(entries: Sequence[SweepConfig], budgets: Sequence[float], seeds: int, out: Path,
              log: Any = print) -> list[SweepRecord]:
    """Every (config, budget, seed) of the sweep, skipping what is done or trained by another process; the
    records of every planned run that has one when this process is through (another's included)."""
    items = plan(entries, budgets, seeds)
    run_plan(items, out, log)
    records, missing = [], 0
    for entry, budget, seed in items:
        where = record_path(out, entry.label, entry.config_hash, budget, seed)
        record = read_record(where) if where.is_file() else None
        if record is None:
            missing += 1
        else:
            records.append(record)
    if missing:
        log(f"{missing} of {len(items)} runs are still being trained by another process: the table leaves them "
            "out; run the same sweep again when they are done")
    return records


def read_records(out: Path) -> list[SweepRecord]:
    """Every record written under ``out`` (a sweep's or a study's folder)."""
    found = (read_record(p) for p in sorted((out / "records").glob("*/*.json")))
    return [r for r in found if r is not None]


# ------------------------------------------------------------------ the frontier
@dataclass
class FrontierRow:
    label: str
    budget: float
    seeds: list[int]
    steps: int
    values: list[float]
    train_flops: list[float]
    wall_time: list[float]
    images_loaded: list[float]
    trainset_acc1: list[float]

    @property
    def median_value(self) -> float:
        return float(statistics.median(self.values))

    @property
    def median_flops(self) -> float:
        return float(statistics.median(self.train_flops))


def frontier_rows(records: Sequence[SweepRecord]) -> list[FrontierRow]:
    """One row per (config, budget), seeds gathered, in the order the configs and budgets first appear."""
    rows: dict[tuple[str, float], FrontierRow] = {}
    for r in records:
        row = rows.setdefault((r.label, r.budget), FrontierRow(r.label, r.budget, [], r.steps, [], [], [], [], []))
        row.seeds.append(r.seed)
        row.values.append(r.value)
        row.train_flops.append(r.train_flops)
        row.wall_time.append(r.wall_time)
        row.images_loaded.append(r.images_loaded)
        if r.trainset_acc1 is not None:
            row.trainset_acc1.append(float(r.trainset_acc1))
    return sorted(rows.values(), key=lambda row: ([r.label for r in records].index(row.label), row.budget))


def frontier_points(rows: Sequence[FrontierRow], label: str) -> list[Point]:
    """(median training FLOPs, median metric) per budget of config ``label``."""
    return [(row.median_flops, row.median_value) for row in rows if row.label == label]


def speedups(rows: Sequence[FrontierRow], records: Sequence[SweepRecord], baseline: str,
             metric: str) -> list[dict[str, Any]]:
    """Every non-baseline (config, budget) against the baseline's frontier: per seed and the median."""
    points = frontier_points(rows, baseline)
    higher = higher_is_better(metric)
    out = []
    for row in rows:
        if row.label == baseline:
            continue
        per_seed = [
            speedup_against(points, r.train_flops, r.value, higher)
            for r in records if r.label == row.label and r.budget == row.budget
        ]
        median = speedup_against(points, row.median_flops, row.median_value, higher)
        out.append({"label": row.label, "budget": row.budget, "median": median, "per_seed": per_seed})
    return out


def _spread(values: Sequence[float], fmt: str) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "-"
    mid = format(statistics.median(finite), fmt)
    if len(finite) == 1:
        return mid
    return f"{mid} [{format(min(finite), fmt)}-{format(max(finite), fmt)}]"


def _flops_text(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g}"


def markdown(rows: Sequence[FrontierRow], records: Sequence[SweepRecord], metric: str, baseline: str) -> str:
    """The frontier table and the speed-ups against the baseline's frontier, as Markdown."""
    lines = [
        f"| config | budget | steps | seeds | {metric} | training FLOPs (multiply-adds) | wall time (s) | "
        "images loaded | trainset/acc1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label}{' (baseline)' if row.label == baseline else ''} | {budget_text(row.budget)} | {row.steps} "
            f"| {len(row.seeds)} | {_spread(row.values, '.4f')} | {_flops_text(row.median_flops)} "
            f"| {_spread(row.wall_time, '.0f')} | {_spread(row.images_loaded, '.0f')} "
            f"| {_spread(row.trainset_acc1, '.3f')} |"
        )
    lines.append("")
    lines.append("Values: median [min-max] over seeds. Training FLOPs and wall time exclude evaluation; FLOPs "
                 "include every plugin's overhead (fvcore multiply-adds, a training step = 3x forward).")
    others = speedups(rows, records, baseline, metric)
    if others:
        lines += ["", f"Speed-up at equal {metric} against the {baseline} frontier (baseline FLOPs for the same "
                  f"{metric}, interpolated in log FLOPs on its monotone envelope, / the recipe's FLOPs):", "",
                  "| config | budget | speed-up (medians) | per seed |", "|---|---|---|---|"]
        for item in others:
            seeds_text = ", ".join(s.text() for s in item["per_seed"])
            lines.append(
                f"| {item['label']} | {budget_text(item['budget'])} | {item['median'].text()} | {seeds_text} |"
            )
    return "\n".join(lines)


def write_plot(rows: Sequence[FrontierRow], metric: str, path: Path, title: str) -> Path:
    """Metric against training FLOPs (log x): a line per config through the medians, a band min-max over seeds."""
    from hasten.builtins.plots import _figure, _save

    figure, axes = _figure(size=(7.0, 4.5))
    axis = axes[0, 0]
    for label in dict.fromkeys(r.label for r in rows):
        mine = sorted((r for r in rows if r.label == label), key=lambda r: r.median_flops)
        xs = [r.median_flops for r in mine]
        (line,) = axis.plot(xs, [r.median_value for r in mine], marker="o", label=label)
        if any(len(r.values) > 1 for r in mine):
            axis.fill_between(xs, [min(r.values) for r in mine], [max(r.values) for r in mine],
                              color=line.get_color(), alpha=0.2, linewidth=0)
    axis.set_xscale("log")
    axis.set_xlabel("training FLOPs (fvcore multiply-adds, evaluation excluded)")
    axis.set_ylabel(metric)
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="small")
    return _save(figure, path)


def report(entries: Sequence[SweepConfig], records: Sequence[SweepRecord], out: Path) -> dict[str, Any]:
    """Write frontier.md, frontier.json and frontier.png in ``out``; return the JSON report."""
    metric = entries[0].config.eval.metric
    baseline = entries[0].label
    rows = frontier_rows(records)
    table = markdown(rows, records, metric, baseline)
    (out / "frontier.md").write_text(table + "\n", encoding="utf-8")
    data = {
        "metric": metric,
        "higher_is_better": higher_is_better(metric),
        "baseline": baseline,
        "configs": [{"label": e.label, "path": e.path, "config_hash": e.config_hash} for e in entries],
        "rows": [asdict(r) for r in rows],
        "frontier": {e.label: frontier_points(rows, e.label) for e in entries},
        "speedups": [
            {"label": s["label"], "budget": s["budget"], "median": asdict(s["median"]),
             "per_seed": [asdict(p) for p in s["per_seed"]]}
            for s in speedups(rows, records, baseline, metric)
        ],
    }
    (out / "frontier.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    write_plot(rows, metric, out / "frontier.png", f"hasten sweep: {', '.join(e.label for e in entries)}")
    return data


def log_sweep_run(entries: Sequence[SweepConfig], out: Path, budgets: Sequence[float], seeds: int) -> str | None:
    """An MLflow run of type ``sweep`` holding the table, the JSON and the plot as artifacts."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from hasten.builtins.mlflow_sender import experiment_id_for
    from hasten.builtins.tracking import resolve_uri
    from hasten.builtins.tracking_store import prepare_store

    first = entries[0].config
    try:
        uri = resolve_uri(first.tracking.uri)
        prepare_store(uri)
        client = MlflowClient(tracking_uri=uri)
        experiment_id = experiment_id_for(client, first.tracking.experiment)
        run = client.create_run(experiment_id, run_name=f"sweep {' vs '.join(e.label for e in entries)}", tags={
            "hasten.run_type": "sweep",
            "hasten.sweep.configs": ",".join(f"{e.label}:{e.config_hash}" for e in entries),
            "hasten.sweep.budgets": ",".join(budget_text(b) for b in sorted(budgets)),
            "hasten.sweep.seeds": str(seeds),
        })
        for name in ("frontier.md", "frontier.json", "frontier.png"):
            client.log_artifact(run.info.run_id, str(out / name))
        client.set_terminated(run.info.run_id, "FINISHED")
    except (MlflowException, OSError) as exc:
        print(f"warning: the sweep's table and plot were not logged to MLflow ({exc}); they are in {out}",
              file=sys.stderr)
        return None
    return str(run.info.run_id)


def default_out(entries: Sequence[SweepConfig]) -> Path:
    return Path("sweeps") / "+".join(_slug(e.label) for e in entries)


def cmd_sweep(args: argparse.Namespace) -> int:
    entries = prepare(args.configs, args.overrides, args.budgets, args.seeds, args.labels)
    out = Path(args.out) if args.out else default_out(entries)
    out.mkdir(parents=True, exist_ok=True)
    records = run_sweep(entries, args.budgets, args.seeds, out)
    data = report(entries, records, out)
    run_id = log_sweep_run(entries, out, args.budgets, args.seeds)
    print()
    print((out / "frontier.md").read_text(encoding="utf-8").rstrip())
    print(f"\nfrontier: {out / 'frontier.md'}, {out / 'frontier.json'}, {out / 'frontier.png'}"
          + (f"; MLflow sweep run {run_id}" if run_id else ""))
    del data
    return 0


def add_command(subparsers: Any) -> None:
    from hasten.commands.arguments import add_config_arguments

    parser = subparsers.add_parser(
        "sweep", help="train configs at several budgets and seeds: accuracy-vs-compute frontiers and speed-ups"
    )
    add_config_arguments(parser)
    parser.add_argument("more", nargs="*", metavar="MORE.yaml", help="more configs (the first one is the baseline)")
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0], metavar="B",
                        help="fractions of each config's length, in (0, 1] (default 0.25 0.5 0.75 1)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per budget: run.seed, run.seed + 1, ...")
    parser.add_argument("--labels", nargs="+", default=None, help="a name per config (default: file names)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="records, run folders, table and plot (default sweeps/<labels>)")
    parser.set_defaults(handler=lambda args: cmd_sweep(_gather(args)))


def _gather(args: argparse.Namespace) -> argparse.Namespace:
    args.configs = [args.config, *args.more]
    return args
