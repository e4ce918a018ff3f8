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
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hasten.accounting import BACKWARD_FACTOR
from hasten.builtins.record import CONFIG_FILE, LOGGED, SUMMARY_FILE, read_metrics
from hasten.config import Config
from hasten.errors import UserError
from hasten.hookspecs import hookimpl
from hasten.plugins import Plugin
from hasten.state import State

DEFAULT_URI = "sqlite:///mlruns.db"
FALLBACK_FILE = "tracking-fallback.jsonl"
SYNCED_FILE = "tracking-fallback.synced.jsonl"
RUN_ID_FILE = "mlflow_run_id"
ARTIFACT_DIR = "artifacts"

#: MLflow's per-request limits (mlflow.utils.validation)
MAX_METRICS_PER_REQUEST = 1000
MAX_PARAMS_PER_REQUEST = 100
MAX_PARAM_LENGTH = 6000

#: send at most once per interval while training (seconds): with log_every 1
#: a request per step would cost the training process CPU for nothing
BATCH_INTERVAL = 1.0
#: retry back-off while the server is unreachable, seconds
BACKOFF_MIN = 0.5
BACKOFF_MAX = 5.0
#: the experiment type MLflow's UI uses to choose its views (custom model training)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: how long the start of a run waits for MLflow to open the run (seconds)
OPEN_WAIT = 10.0

#: the FLOP convention, logged as params so every run states how it counts
FLOP_CONVENTION = {
    "flops.counter": "fvcore",
    "flops.unit": "multiply-add (1 MAC = 1 FLOP; torch.utils.flop_counter counts 2)",
    "flops.backward_factor": str(BACKWARD_FACTOR),
    "flops.train_step": f"forward x (1 + {BACKWARD_FACTOR:g}) per trained sample",
    "flops.counted": "once per (module, input shape), eval mode, per sample, scaled by batch size",
    "flops.overhead": "extra forwards reported by plugins, flops/overhead/<plugin>",
}

#: MLflow error codes that no retry can fix (a malformed key or value): the
#: operation is set aside in RUN_DIR/tracking-rejected.jsonl with the error
#: instead of blocking everything queued behind it
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})
REJECTED_FILE = "tracking-rejected.jsonl"

Op = dict[str, Any]


def resolve_uri(configured: str | None) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite file."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def ui_hint(uri: str, experiment_id: str | None, run_id: str | None) -> tuple[str | None, str]:
    """(command, page) to look at a run: no command and the run's URL on a
    tracking server; for a local store the ``mlflow ui`` command (paths made
    absolute, so it works from any directory) and the page it then serves."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}" if experiment_id and run_id else ""
    if uri.startswith(("http://", "https://")):
        return None, f"{uri.rstrip('/')}/{page}"
    store = uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        store = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    elif "://" not in uri:
        store = str(Path(uri).resolve())
    return f"mlflow ui --backend-store-uri {store}", f"http://127.0.0.1:5000/{page}"


def git_commit(cwd: str | Path | None = None) -> tuple[str, bool] | None:
    """(commit, dirty) of the git work tree at ``cwd``; None without git or a repository."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
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


# ---------------------------------------------------------------- the sender
class Sender:
    """Sends queued operations to MLflow, in order, retrying until they succeed.

    Operations are JSON-able dicts (so unsent ones can be written to the
    fallback file): ``open`` (create or continue the run), ``params``,
    ``tags``, ``metrics``, ``artifact``, ``end``. With ``background=True`` a
    daemon thread sends them; otherwise :meth:`attempt` does, in the caller.
    """

    _STOP = object()

    def __init__(self, uri: str, *, background: bool = True, on_open: Any = None) -> None:
        self.uri = uri
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.on_open = on_open
        self.pending: collections.deque[Op] = collections.deque()
        self.incoming: queue.Queue[Any] = queue.Queue()
        self.enqueued = 0
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        #: (operation, error) pairs MLflow refused for good
        self.rejected: list[tuple[Op, str]] = []
        self.next_try = 0.0
        self._delay = 0.0
        self._client: Any = None
        self._existing_params: set[str] = set()
        self._abandoned = False
        self._flushing = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name="hasten-tracking", daemon=True)
            self._thread.start()

    # -- producer side (training thread)
    def put(self, op: Op) -> None:
        self.enqueued += 1
        if self._thread is not None:
            self.incoming.put(op)
        else:
            self.pending.append(op)
            if time.monotonic() >= self.next_try:
                self.attempt()

    def flush(self, timeout: float) -> bool:
        """Wait until every operation was sent or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        self._flushing = True  # no batching interval from now on
        self.next_try = 0.0  # send right away, not after the interval or the current back-off
        if self._thread is not None:
            self.incoming.put(None)  # wakes the thread
        while self.sent < self.enqueued:
            now = time.monotonic()
            if now >= deadline:
                return False
            if self._thread is None:
                if now >= self.next_try:
                    self.attempt()
                else:
                    time.sleep(min(0.05, self.next_try - now))
            else:
                time.sleep(0.02)
        return True

    def close(self, join_timeout: float = 2.0) -> list[Op]:
        """Stop the thread; return the operations still unsent (in order)."""
        if self._thread is not None:
            self.incoming.put(self._STOP)
            self._thread.join(join_timeout)
            # A thread still inside a hanging request keeps its op at pending[0]:
            # that op goes to the fallback too (a duplicate beats a loss).
            self._abandoned = True
        left = list(self.pending)
        while True:
            try:
                item = self.incoming.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, dict):
                left.append(item)
        return left

    # -- consumer side
    def _loop(self) -> None:
        while True:
            wait = None if not self.pending else max(0.0, self.next_try - time.monotonic())
            try:
                item = self.incoming.get(timeout=wait)
            except queue.Empty:
                item = None
            stop = False
            while True:
                if item is self._STOP:
                    stop = True
                elif isinstance(item, dict):
                    self.pending.append(item)
                try:
                    item = self.incoming.get_nowait()
                except queue.Empty:
                    break
            if stop or self._abandoned:
                return
            if self.pending and time.monotonic() >= self.next_try:
                self.attempt()

    def attempt(self) -> bool:
        """Send pending operations in order; stop at the first failure and back off."""
        while self.pending and not self._abandoned:
            op = self.pending[0]
            count = 1
            try:
                if op["op"] == "metrics":
                    # Coalesce consecutive metric ops into one request (<= 1000 metrics).
                    merged = list(op["metrics"])
                    while count < len(self.pending) and self.pending[count]["op"] == "metrics":
                        more = self.pending[count]["metrics"]
                        if len(merged) + len(more) > MAX_METRICS_PER_REQUEST:
                            break
                        merged.extend(more)
                        count += 1
                    self._send_metrics(merged)
                else:
                    self.execute(op)
            except Exception as exc:
                if getattr(exc, "error_code", None) in PERMANENT_ERRORS and op["op"] != "open":
                    error = f"{exc.error_code}: {str(exc).splitlines()[0]}"  # type: ignore[attr-defined]
                    for _ in range(count):
                        self.rejected.append((self.pending.popleft(), error))
                    self.sent += count
                    continue
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self._delay = min(BACKOFF_MAX, max(BACKOFF_MIN, self._delay * 2))
                self.next_try = time.monotonic() + self._delay
                return False
            for _ in range(count):
                self.pending.popleft()
            self.sent += count
            self._delay = 0.0
            if not self._flushing:
                self.next_try = time.monotonic() + BATCH_INTERVAL
        return not self.pending

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def execute(self, op: Op) -> None:
        """Send one (non-metrics) operation; raises on failure."""
        from mlflow.entities import Param, RunTag

        kind = op["op"]
        if kind == "open":
            self._open(op)
        elif kind == "metrics":
            self._send_metrics(op["metrics"])
        elif kind == "params":
            assert self.run_id is not None
            # A continued run keeps its first values: MLflow refuses to change a param.
            items = [Param(k, v) for k, v in op["params"].items() if k not in self._existing_params]
            for start in range(0, len(items), MAX_PARAMS_PER_REQUEST):
                self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_REQUEST])
            self._existing_params.update(op["params"])
        elif kind == "tags":
            assert self.run_id is not None
            tags = [RunTag(k, str(v)) for k, v in op["tags"].items()]
            for start in range(0, len(tags), MAX_PARAMS_PER_REQUEST):
                self.client.log_batch(self.run_id, tags=tags[start : start + MAX_PARAMS_PER_REQUEST])
        elif kind == "artifact":
            assert self.run_id is not None
            self.client.log_artifact(self.run_id, op["path"], op.get("artifact_path"))
        elif kind == "inputs":
            assert self.run_id is not None
            self._log_dataset(op["dataset"])
        elif kind == "model":
            assert self.run_id is not None
            self._log_model(op)
        elif kind == "end":
            assert self.run_id is not None
            self.client.set_terminated(self.run_id, op["status"])
        else:
            raise ValueError(f"unknown tracking operation {kind!r}")

    def _open(self, op: Op) -> None:
        client = self.client
        run_id = op.get("run_id")
        if run_id:
            from mlflow.exceptions import MlflowException

            try:
                run = client.get_run(run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                # A checkpoint from another tracking store: start a new run, say which it continues.
                op = {**op, "run_id": None, "tags": {**(op.get("tags") or {}), "hasten.continues_run": run_id}}
                run_id = None
            else:
                self._existing_params = set(run.data.params)
                client.update_run(run_id, status="RUNNING")
        if not run_id:
            experiment = client.get_experiment_by_name(op["experiment"])
            if experiment is None:
                try:
                    experiment_id = client.create_experiment(op["experiment"])
                except Exception:  # created meanwhile by another run: use it
                    experiment = client.get_experiment_by_name(op["experiment"])
                    if experiment is None:
                        raise
            if experiment is not None:
                experiment_id = experiment.experiment_id
            experiment = client.get_experiment(experiment_id)
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # MLflow's UI shows the training views
                client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            run = client.create_run(experiment_id, run_name=op.get("run_name"), tags=op.get("tags") or {})
            run_id = run.info.run_id
        self.run_id = run_id
        self.experiment_id = run.info.experiment_id
        if self.on_open is not None:
            self.on_open(run_id)

    def _log_dataset(self, dataset: dict[str, Any]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(dataset["name"], dataset["digest"], dataset["source_type"], dataset["source"],
                         profile=dataset.get("profile"))
        context = InputTag("mlflow.data.context", dataset.get("context", "train"))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags=[context])])

    def _log_model(self, op: Op) -> None:
        """The trained model as an MLflow logged model, an output of the run
        (its weights are the run's ``weights.pt`` artifact)."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        assert self.run_id is not None
        experiment_id = self.experiment_id or self.client.get_run(self.run_id).info.experiment_id
        model = self.client.create_logged_model(
            experiment_id, name=op["name"], source_run_id=self.run_id, params=op.get("params") or {},
            model_type=op.get("model_type"), tags={"hasten.weights": f"runs:/{self.run_id}/weights.pt"},
        )
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, int(op.get("step", 0)))])

    def wait_open(self, timeout: float) -> bool:
        """Wait until the run is open, a send failed or ``timeout`` passed
        (the start banner names the run id when MLflow answers quickly)."""
        deadline = time.monotonic() + timeout
        while self.run_id is None and self.failures == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.run_id is not None

    def _send_metrics(self, rows: list[list[Any]]) -> None:
        from mlflow.entities import Metric

        assert self.run_id is not None
        metrics = [Metric(key, float(value), int(ts), int(step)) for key, value, ts, step in rows]
        self.client.log_batch(self.run_id, metrics=metrics)


def _use_fast_failing_http() -> None:
    # MLflow's HTTP client retries 7 times with growing pauses (minutes) by
    # default; the sender does its own retries, so fail fast (user settings win).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # MLflow prints the run's URL to stdout when a run ends: from a background
    # thread that interleaves with the user's output (and `--json` output).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    _quiet_store_migrations()


def _quiet_store_migrations() -> None:
    # A new sqlite store is created and migrated on first use; MLflow and
    # alembic announce each step at INFO, which says nothing to a user.
    # Warnings and errors still show.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


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


# ------------------------------------------------------------ fallback, sync
def write_fallback(run_dir: str | Path, sender: Sender, left: list[Op]) -> Path:
    """Append the unsent operations to RUN_DIR/tracking-fallback.jsonl.

    The first line of each appended block is an ``open`` record naming the run
    (its id when MLflow had created it), so ``hasten sync`` knows where the
    following operations go.
    """
    path = Path(run_dir) / FALLBACK_FILE
    opens = [op for op in left if op["op"] == "open"]
    header = dict(opens[0]) if opens else {"op": "open", "uri": sender.uri, "experiment": None, "run_name": None}
    header["run_id"] = sender.run_id or header.get("run_id")
    with open(path, "a", encoding="utf-8") as file:
        for op in [header, *[op for op in left if op["op"] != "open"]]:
            file.write(json.dumps(op) + "\n")
        file.flush()
        os.fsync(file.fileno())
    return path


def sync_fallback(run_dir: str | Path, uri: str | None = None) -> dict[str, Any]:
    """Send RUN_DIR/tracking-fallback.jsonl to MLflow (``hasten sync``).

    On success the file is renamed to ``tracking-fallback.synced.jsonl``. On
    failure the operations not yet sent are written back, so a later sync
    neither repeats nor loses any, and a :class:`UserError` says what failed.
    """
    path = Path(run_dir) / FALLBACK_FILE
    if not path.is_file():
        raise UserError(f"hasten sync: no {FALLBACK_FILE} in {run_dir}; nothing to send")
    ops = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    _use_fast_failing_http()
    sender: Sender | None = None
    counts: collections.Counter[str] = collections.Counter()
    for index, op in enumerate(ops):
        try:
            if op["op"] == "open":
                target = uri or op.get("uri") or resolve_uri(None)
                from hasten.builtins.tracking_store import check_uri, prepare_store

                check_uri(target, key="--uri")
                prepare_store(target)  # a broken local store is named as such, not as "unreachable"
                sender = Sender(target, background=False)
                op = {**op, "run_id": op.get("run_id"), "experiment": op.get("experiment") or "hasten"}
                sender.execute(op)
                ops[index] = {**op, "run_id": sender.run_id}  # a retry must not create a second run
                (Path(run_dir) / RUN_ID_FILE).write_text(f"{sender.run_id}\n", encoding="utf-8")
            else:
                if sender is None:
                    raise UserError(f"{path}: the first line must be an 'open' record")
                sender.execute(op)
        except UserError:
            raise
        except Exception as exc:
            # Keep the latest open record before the failure, so the rest knows its run.
            header = [o for o in ops[:index] if o["op"] == "open"][-1:] if op["op"] != "open" else []
            remaining = header + ops[index:]
            path.write_text("".join(json.dumps(o) + "\n" for o in remaining), encoding="utf-8")
            raise UserError(
                f"hasten sync: sending to {sender.uri if sender else uri} failed at operation {index + 1} "
                f"of {len(ops)} ({type(exc).__name__}: {exc}); the rest stays in {path}"
            ) from None
        counts[op["op"]] += len(op["metrics"]) if op["op"] == "metrics" else 1
    path.rename(Path(run_dir) / SYNCED_FILE)
    return {"run_id": sender.run_id if sender else None, "sent": dict(counts)}


def cmd_sync(args: Any) -> int:
    result = sync_fallback(args.run_dir, args.uri)
    sent = result["sent"]
    print(
        f"sent {sent.get('metrics', 0)} metric values, {sent.get('artifact', 0)} artifacts "
        f"to MLflow run {result['run_id']}"
    )
    return 0


def add_sync_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sync", help="send tracking data saved while the MLflow server was unreachable (tracking-fallback.jsonl)"
    )
    parser.add_argument("run_dir", help="the run directory holding tracking-fallback.jsonl")
    parser.add_argument("--uri", default=None, help="tracking URI to send to (default: the one the run used)")
    parser.set_defaults(handler=cmd_sync)
