"""MLflow tracking, a built-in plugin (rank 0 only).

What is logged:

* params: the resolved config (flattened, dotted keys), the versions of
  hasten, torch and every enabled plugin, and the FLOP convention
  (``flops.*``);
* tags: the git commit of the working directory when there is one
  (``mlflow.source.git.commit``, ``git.dirty``), the run directory;
* metrics: everything ``hasten_log`` receives (loss, LR, momentum,
  resolution, augmentation magnitude, throughput, FLOPs, evaluation metrics,
  plugin diagnostics), plus ``time/elapsed`` (training wall time, summed over
  resumes) and the cumulative ``flops/*`` at *every* logged step, evaluation
  steps included, so ``hasten compare`` reads the cost at which a metric was
  reached straight from the histories;
* artifacts at the end: the resolved config (``config.yaml``), the run's
  summary (``summary.json``), the final weights (``weights.pt``, a
  ``state_dict``) and PNG plots (``plots/``).

Nothing is sent from the training loop. ``hasten_log`` appends to a queue; a
background thread drains it with ``MlflowClient.log_batch`` at most once a
second (up to 1000 metrics a request), so a slow or remote server never
slows a step. When the
server is down or goes away, the operations stay queued, in order, and are
retried with exponential back-off until it answers. At the end of the run
the plugin waits up to ``tracking.flush_timeout`` seconds for the queue to
drain; whatever is still unsent is written to
``RUN_DIR/tracking-fallback.jsonl`` and ``hasten sync RUN_DIR`` sends it
later. Nothing is dropped silently.

The MLflow run id is kept in the checkpoints (``hasten_state_dict``) and in
``RUN_DIR/mlflow_run_id``: ``hasten train --resume`` continues the same
MLflow run. The metric rows are those the built-in run record
(:mod:`hasten.builtins.record`) writes to ``RUN_DIR/metrics.jsonl`` (with or
without tracking); the plots of a resumed run read the earlier ones from there.

This module is the hook plugin; the queue that talks to MLflow and the
fallback file are :mod:`hasten.builtins.mlflow_sender`, and ``hasten sync``
is :mod:`hasten.commands.sync`.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hasten.accounting import BACKWARD_FACTOR
from hasten.builtins.mlflow_sender import (
    ARTIFACT_DIR,
    DEFAULT_URI,
    FALLBACK_FILE,
    MAX_METRICS_PER_REQUEST,
    MAX_PARAM_LENGTH,
    OPEN_WAIT,
    REJECTED_FILE,
    RUN_ID_FILE,
    SYNCED_FILE,
    Op,
    Sender,
    _quiet_store_migrations,
    _use_fast_failing_http,
    resolve_uri,
    ui_hint,
    write_fallback,
)
from hasten.builtins.record import CONFIG_FILE, LOGGED, SUMMARY_FILE, read_metrics
from hasten.config import Config
from hasten.errors import UserError
from hasten.hookspecs import hookimpl
from hasten.plugins import Plugin
from hasten.state import State

#: the FLOP convention, logged as params so every run states how it counts
FLOP_CONVENTION = {
    "flops.counter": "fvcore",
    "flops.unit": "multiply-add (1 MAC = 1 FLOP; torch.utils.flop_counter counts 2)",
    "flops.backward_factor": str(BACKWARD_FACTOR),
    "flops.train_step": f"forward x (1 + {BACKWARD_FACTOR:g}) per trained sample",
    "flops.counted": "once per (module, input shape), eval mode, per sample, scaled by batch size",
    "flops.overhead": "extra forwards reported by plugins, flops/overhead/<plugin>",
}
def git_commit(cwd: str | Path | None = None, ignore: Sequence[str] = ()) -> tuple[str, bool] | None:
    """(commit, dirty) of the git work tree at ``cwd``; None without git or a repository.

    ``ignore``: pathspecs (from the repository's top) whose changes do not make the tree dirty."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
             *(f":(top,exclude){spec}" for spec in ignore)],
            cwd=cwd, capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit, bool(status)) if commit else None


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:MAX_PARAM_LENGTH]


def run_params(config: Config) -> dict[str, str]:
    """The params of a run: flattened config, versions, FLOP convention."""
    import torch

    import hasten
    from hasten.plugins import installed_plugins

    params = {key: _param_value(value) for key, value in config.flat().items()}
    params["version.hasten"] = hasten.__version__
    params["version.torch"] = torch.__version__
    infos = installed_plugins()
    for name in config.plugins:
        info = infos.get(name)
        params[f"version.plugins.{name}"] = info.version if info is not None else "?"
    params.update(FLOP_CONVENTION)
    return params


def run_tags(config: Config, state: State, run_dir: Path) -> dict[str, str]:
    """MLflow's standard tags (source, git commit, user) and hasten's own:
    ``hasten.run_type`` (train, lr-find, compare, sweep: filter with
    ``tags.hasten.run_type = 'train'``) and the run directory."""
    import getpass

    tags = {
        "hasten.run_dir": str(run_dir.resolve()),
        "hasten.run_type": state.run_type,
        "hasten.task": config.task.name,
        "mlflow.runName": config.run.name,
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": f"hasten {config.source}" if config.source else "hasten",
    }
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        pass
    # the project: the working directory's checkout, else the config file's
    commit = git_commit() or (git_commit(Path(config.source).resolve().parent) if config.source else None)
    if commit is not None:
        tags["mlflow.source.git.commit"] = commit[0]
        tags["git.dirty"] = str(commit[1]).lower()
    return tags


def dataset_input(config: Config, state: State) -> dict[str, Any]:
    """The training data as an MLflow dataset input (name, digest of what
    defines it, source, profile); JSON-able like every queued operation."""
    import hashlib

    data = config.data
    identity = {"dataset": data.dataset, "path": data.path, "options": data.options, "resolution": data.resolution}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    if data.path:
        source_type, source = "local", json.dumps({"uri": str(Path(data.path).resolve())})
    else:  # built in (procedural, embedded): the registry name is the source
        source_type, source = "code", json.dumps({"tags": {"hasten.dataset": data.dataset}})
    info = getattr(state.data, "info", None)
    profile = {"train_samples": getattr(info, "train_size", None), "num_classes": getattr(info, "num_classes", None),
               "resolution": data.resolution}
    return {"name": data.dataset, "digest": digest, "source_type": source_type, "source": source,
            "profile": json.dumps(profile), "context": "train"}


class SystemMetrics:
    """MLflow's system-metrics monitor for the run, started once the run is open."""

    def __init__(self, sender: Sender, uri: str) -> None:
        self.monitor: Any = None
        self.uri = uri
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._start, args=(sender,), name="hasten-system-metrics", daemon=True)
        self.thread.start()

    def _start(self, sender: Sender) -> None:
        while sender.run_id is None and not self.stopped.wait(0.2):
            pass
        if sender.run_id is None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # its start and stop are announced at INFO, between the progress lines; warnings still show
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)

        # resume_logging: a resumed run's system metrics continue after its last step instead of overwriting
        self.monitor = SystemMetricsMonitor(sender.run_id, resume_logging=True, tracking_uri=self.uri)
        self.monitor.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        if self.monitor is not None:
            self.monitor.finish()


class RunType(Plugin):
    """Marks the runs a command drives (``Trainer(..., extra_builtins=[RunType("compare")])``):
    sets ``state.run_type``, which tracking tags ``hasten.run_type``."""

    name = "run_type"

    def __init__(self, run_type: str) -> None:
        super().__init__()
        self.run_type = run_type

    @hookimpl(tryfirst=True)
    def hasten_setup(self, state: State) -> None:
        state.run_type = self.run_type

# ---------------------------------------------------------------- the plugin
class Tracking(Plugin):
    """MLflow tracking: params, metrics, artifacts; asynchronous; survives server outages."""

    name = "tracking"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.uri = resolve_uri(config.tracking.uri)
        self.sender: Sender | None = None
        self.run_id: str | None = None  # from a checkpoint when resuming
        self.history: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
        #: the hyper-parameters of every step of this process (schedules.png draws them all)
        self.schedule: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
        self.run_dir = Path(".")
        self.system_monitor: SystemMetrics | None = None
        if config.tracking.system_metrics:
            try:
                import psutil  # noqa: F401 - MLflow's system metrics read it
            except ImportError:
                raise UserError(
                    "tracking.system_metrics: MLflow's system metrics need psutil (pip install psutil), "
                    "or set tracking.system_metrics: false"
                ) from None

    # -- lifecycle
    @hookimpl
    def hasten_configure(self, config: Config) -> None:
        # Before any work: a URI no store serves, or a broken local store, stops the run now, and the
        # local SQLite store is created atomically here rather than by a request a kill could cut short.
        from hasten.builtins.tracking_store import check_uri, prepare_store

        check_uri(self.uri)
        if os.environ.get("RANK", "0") == "0":  # only rank 0 logs
            _quiet_store_migrations()  # a first run creates the store here
            prepare_store(self.uri)

    @hookimpl
    def hasten_setup(self, state: State) -> None:
        self.run_dir = Path(state.run_dir)

    @hookimpl
    def hasten_load_state_dict(self, state: State, blob: dict[str, Any]) -> None:
        mine = blob.get(self.name)
        if not state.is_main or not mine:
            return
        self.run_id = mine.get("run_id") or None
        # The plots cover the whole run: the rows logged before the checkpoint (later steps are re-logged).
        for row in read_metrics(self.run_dir):
            if int(row["step"]) < state.step:
                for key, value in row["metrics"].items():
                    self.history[key].append((int(row["step"]), float(value)))

    @hookimpl
    def hasten_fit_start(self, state: State) -> None:
        if not state.is_main:
            return
        # The run opens here, not in hasten_setup: a resumed run's id arrives with
        # hasten_load_state_dict (after setup), and a Trainer that never trains
        # (hasten estimate) opens no empty run.
        resumed = bool(state.scratch.get("engine/resumed"))
        if self.run_id is None:
            # Resumed from a checkpoint written before the run opened, or killed before its first
            # checkpoint: the run folder still names the MLflow run to continue.
            saved = self.run_dir / RUN_ID_FILE
            if (state.step > 0 or resumed) and saved.is_file():
                self.run_id = saved.read_text(encoding="utf-8").strip() or None
        _use_fast_failing_http()
        # Import the client here, before the first step: importing it on the
        # sender's thread would compete with the first training steps.
        import mlflow.entities
        import mlflow.tracking  # noqa: F401

        self.sender = Sender(self.uri, background=self.config.tracking.asynchronous, on_open=self._opened)
        state.scratch["tracking"] = {"uri": self.uri, "run_id": self.run_id, "sender": self.sender}
        tags = {**run_tags(self.config, state, self.run_dir), **self.config.tracking.tags}
        self.sender.put(
            {
                "op": "open",
                "uri": self.uri,
                "experiment": self.config.tracking.experiment,
                "run_id": self.run_id,
                "run_name": self.config.run.name,
                "tags": {},
            }
        )
        if self.config.tracking.system_metrics:
            self.system_monitor = SystemMetrics(self.sender, self.uri)
        self.sender.put({"op": "tags", "tags": tags})
        params = run_params(self.config)
        params["run.world_size"] = str(state.world_size)
        params["run.total_steps"] = str(state.total_steps)
        self.sender.put({"op": "params", "params": params})
        if state.step == 0:  # a resumed run logged its inputs already
            self.sender.put({"op": "inputs", "dataset": dataset_input(self.config, state)})
        # The run id for the start banner. A local store always opens (its first
        # use creates the tables, seconds); a server that does not answer within
        # OPEN_WAIT seconds costs no more than that (the summary names the id).
        info = state.scratch["tracking"]
        info["experiment"] = self.config.tracking.experiment
        local = not self.uri.startswith(("http://", "https://", "databricks"))
        wait = self.config.tracking.flush_timeout if local else min(OPEN_WAIT, self.config.tracking.flush_timeout)
        if state.config.run.progress and self.sender.wait_open(wait):
            info["run_id"] = self.sender.run_id
            info["view"] = ui_hint(self.uri, self.sender.experiment_id, self.sender.run_id)
        elif self.sender.last_error:
            info["error"] = self.sender.last_error

    def _opened(self, run_id: str) -> None:
        # Runs on the sender's thread once MLflow accepted the run.
        self.run_id = run_id
        try:
            (self.run_dir / RUN_ID_FILE).write_text(run_id + "\n", encoding="utf-8")
        except OSError:
            pass

    @hookimpl
    def hasten_log(self, state: State, metrics: dict[str, float], step: int) -> None:
        if self.sender is None:
            return
        # The run record's row of this call (metrics + time/elapsed + cumulative cost), written to metrics.jsonl.
        logged = state.scratch.get(LOGGED)
        values = logged[1] if logged is not None and logged[0] is metrics else dict(metrics)
        stamp = int(time.time() * 1000)
        rows = [[key, float(value), stamp, step] for key, value in values.items()]
        for start in range(0, len(rows), MAX_METRICS_PER_REQUEST):
            self.sender.put({"op": "metrics", "metrics": rows[start : start + MAX_METRICS_PER_REQUEST]})
        for key, value in values.items():
            self.history[key].append((step, float(value)))

    @hookimpl
    def hasten_step_end(self, state: State) -> None:
        if self.sender is None:
            return
        step = state.step
        for key, value in (("train/lr", state.lr), ("train/momentum", state.momentum),
                           ("train/resolution", state.resolution), ("train/aug_magnitude", state.aug_magnitude)):
            self.schedule[key].append((step, float(value)))

    @hookimpl
    def hasten_state_dict(self, state: State) -> dict[str, Any] | None:
        if not state.is_main:
            return None
        return {self.name: {"run_id": self.run_id or ""}}

    @hookimpl
    def hasten_fit_end(self, state: State) -> None:
        sender = self.sender
        if sender is None:
            return
        if self.system_monitor is not None:
            self.system_monitor.stop()
        if self.config.tracking.artifacts:
            for path, artifact_path in self._write_artifacts(state):
                sender.put({"op": "artifact", "path": str(path), "artifact_path": artifact_path})
            model = self.config.model
            sender.put({"op": "model", "name": model.name, "model_type": f"hasten/{self.config.task.name}",
                        "params": {f"options.{k}": _param_value(v) for k, v in model.options.items()},
                        "step": max(state.step - 1, 0)})
        # A stop at the last step (e.g. non-finite final weights) is a stop, not a finished run.
        finished = (state.stop_reason is None and state.step >= state.total_steps) or (
            state.should_stop is not None and state.stop_reason == state.should_stop
        )
        interrupted = any(name in (state.stop_reason or "") for name in ("SIGINT", "SIGTERM"))
        status = "FINISHED" if finished else "KILLED" if interrupted else "FAILED"
        if not finished and state.stop_reason:
            sender.put({"op": "tags", "tags": {"hasten.stop_reason": state.stop_reason[:5000]}})
        sender.put({"op": "end", "status": status})
        delivered = sender.flush(self.config.tracking.flush_timeout)
        left = [] if delivered else sender.close()
        if delivered:
            sender.close()
        info = state.scratch.setdefault("tracking", {})
        info.update({"run_id": sender.run_id, "failures": sender.failures, "unsent": len(left),
                     "rejected": len(sender.rejected)})
        if sender.rejected:
            path = self.run_dir / REJECTED_FILE
            with open(path, "a", encoding="utf-8") as file:
                for op, error in sender.rejected:
                    file.write(json.dumps({"error": error, **op}) + "\n")
            print(f"warning: MLflow refused {len(sender.rejected)} operations ({sender.rejected[0][1]}); "
                  f"they are kept in {path}", file=sys.stderr)
        if left:
            path = write_fallback(self.run_dir, sender, left)
            info["fallback"] = str(path)
            print(
                f"warning: tracking {'server' if self.uri.startswith('http') else 'store'} {self.uri} "
                f"{'unreachable' if self.uri.startswith('http') else 'could not be written'} ({sender.last_error}); "
                f"{len(left)} operations saved to {path}; send them with `hasten sync {self.run_dir}`",
                file=sys.stderr,
            )

    def _write_artifacts(self, state: State) -> list[tuple[Path, str | None]]:
        import torch

        from hasten.builtins.plots import write_run_plots

        out = self.run_dir / ARTIFACT_DIR
        out.mkdir(parents=True, exist_ok=True)
        weights_path = out / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in state.model.state_dict().items()}, weights_path)
        # config.yaml and summary.json: the run record wrote them to the run directory
        files: list[tuple[Path, str | None]] = [
            (self.run_dir / name, None) for name in (CONFIG_FILE, SUMMARY_FILE) if (self.run_dir / name).is_file()
        ]
        files.append((weights_path, None))
        try:
            title = f"{self.config.run.name} ({self.config.tracking.experiment})"
            plots = write_run_plots(self.history, self.config.eval.metric, out / "plots", title=title,
                                    schedule=self.schedule)
        except Exception as exc:
            print(f"warning: plots not written: {type(exc).__name__}: {exc}", file=sys.stderr)
            plots = []
        files += [(p, "plots") for p in plots]
        return files


__all__ = [  # the sender's names stay importable from here (tests, commands)
    "ARTIFACT_DIR", "DEFAULT_URI", "FALLBACK_FILE", "REJECTED_FILE", "RUN_ID_FILE", "SYNCED_FILE", "Op",
    "RunType", "Sender", "Tracking", "git_commit", "resolve_uri", "ui_hint", "write_fallback",
]
