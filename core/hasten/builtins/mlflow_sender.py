"""The MLflow sender: an ordered, retrying queue of operations to an MLflow tracking store.

The tracking built-in (:mod:`hasten.builtins.tracking`) puts operations
(JSON-able dicts: ``open``, ``params``, ``tags``, ``metrics``, ``artifact``,
``end``) into a :class:`Sender`; a background thread sends them with
``MlflowClient`` and retries with back-off while the server is unreachable.
What is left unsent at the end goes to ``RUN_DIR/tracking-fallback.jsonl``
(:func:`write_fallback`), which ``hasten sync`` (:mod:`hasten.commands.sync`)
sends later. The constants here name the files of a run directory that
tracking writes and the URI a run logs to (:func:`resolve_uri`).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

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
#: MLflow error codes that no retry can fix (a malformed key or value): the
#: operation is set aside in RUN_DIR/tracking-rejected.jsonl with the error
#: instead of blocking everything queued behind it
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})
REJECTED_FILE = "tracking-rejected.jsonl"

Op = dict[str, Any]

def resolve_uri(configured: str | None) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite file."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def experiment_id_for(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when missing; one that another process creates at the same
    moment is used, not an error."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # created meanwhile by another run: use it
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


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
            experiment_id = experiment_id_for(client, op["experiment"])
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

