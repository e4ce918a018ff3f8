"""What every run leaves in its run directory, whatever the display and tracking settings.

A built-in plugin (rank 0 writes):

* ``config.yaml``: the resolved config (every default filled in), written when
  training starts;
* ``metrics.jsonl``: one JSON object per logged step, ``{"step": s, "metrics":
  {...}}``, with everything ``hasten_log`` receives plus ``time/elapsed``
  (training wall time, summed over resumes) and the cumulative ``flops/*`` at
  every logged step, evaluations included (non-finite values as strings);
  a resume keeps the rows before its checkpoint and appends;
* ``summary.json``: the end of the run: steps, wall time, final metrics, why it
  stopped (``stop_reason``, null for a finished run), the MLflow run when tracking was on.

MLflow tracking logs the same rows (it takes them from here, so the file and
the server agree) and ``config.yaml`` / ``summary.json`` as artifacts.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from hasten.config import Config
from hasten.hookspecs import hookimpl
from hasten.plugins import Plugin
from hasten.state import State

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
#: ``state.scratch`` key of the row logged last: (the metrics dict hasten_log received, the row's values)
LOGGED = "record/logged"


def json_number(value: float) -> float | str:
    """A float JSON can hold: non-finite values as their string ('nan', 'inf')."""
    return value if math.isfinite(value) else str(value)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl`` (a line cut by a kill is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class RunRecord(Plugin):
    """Writes config.yaml, metrics.jsonl and summary.json to the run directory (rank 0)."""

    name = "record"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.file: Any = None
        self.started = 0.0
        self.elapsed_offset = 0.0
        #: flops/* -> (step, value) last written: an evaluation logged at the same step repeats no cost
        self.last_cost: dict[str, tuple[int, float]] = {}

    def elapsed(self) -> float:
        return self.elapsed_offset + (time.perf_counter() - self.started if self.started else 0.0)

    @hookimpl
    def hasten_load_state_dict(self, state: State, blob: dict[str, Any]) -> None:
        if not state.is_main:
            return
        # Checkpoints written before this plugin existed kept the elapsed time with tracking.
        mine = blob.get(self.name) or blob.get("tracking") or {}
        self.elapsed_offset = float(mine.get("elapsed", 0.0))
        # Keep the rows up to the checkpoint; the later steps are trained and logged again.
        kept = [row for row in read_metrics(state.run_dir) if int(row["step"]) < state.step]
        path = Path(state.run_dir) / METRICS_FILE
        if path.is_file():
            path.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")

    @hookimpl(tryfirst=True)
    def hasten_fit_start(self, state: State) -> None:
        if not state.is_main:
            return
        import yaml

        run_dir = Path(state.run_dir)
        resolved = yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)
        (run_dir / CONFIG_FILE).write_text(resolved, encoding="utf-8")
        # A resume from step 0 (killed before its first checkpoint) logs the whole history again: start afresh.
        restart = bool(state.scratch.get("engine/resumed")) and state.step == 0
        self.file = open(run_dir / METRICS_FILE, "w" if restart else "a", encoding="utf-8")
        self.started = time.perf_counter()

    @hookimpl(tryfirst=True)
    def hasten_log(self, state: State, metrics: dict[str, float], step: int) -> None:
        if self.file is None:
            return
        values = dict(metrics)
        values["time/elapsed"] = self.elapsed()
        # Evaluation rows carry the cumulative cost too (compare reads cost-to-target), unless the
        # training metrics of this step already logged the same figure.
        for key, value in state.flops.metrics().items():
            if key not in values and self.last_cost.get(key) != (step, value):
                values[key] = value
        self.last_cost.update({k: (step, v) for k, v in values.items() if k.startswith("flops/")})
        state.scratch[LOGGED] = (metrics, values)
        clean = {k: json_number(float(v)) for k, v in values.items()}
        self.file.write(json.dumps({"step": step, "metrics": clean}) + "\n")

    @hookimpl
    def hasten_state_dict(self, state: State) -> dict[str, Any] | None:
        if not state.is_main:
            return None
        if self.file is not None:
            self.file.flush()  # the rows a resume keeps are on disk with the checkpoint
        return {self.name: {"elapsed": self.elapsed()}}

    @hookimpl(tryfirst=True)
    def hasten_fit_end(self, state: State) -> None:
        # tryfirst: summary.json exists when tracking logs its artifacts
        if self.file is None:
            return
        self.file.close()
        self.file = None
        tracking = state.scratch.get("tracking") or {}
        summary = {
            "run": self.config.run.name,
            "run_dir": str(state.run_dir),
            "steps": state.step,
            "total_steps": state.total_steps,
            "finished": (state.stop_reason is None and state.step >= state.total_steps)
            or (state.should_stop is not None and state.stop_reason == state.should_stop),
            "stop_reason": state.stop_reason,
            "elapsed_s": self.elapsed(),
            "samples_seen": state.samples_seen,
            "metrics": {k: json_number(float(v)) for k, v in sorted(state.metrics.items())},
            "tracking": {"uri": tracking.get("uri"), "run_id": tracking.get("run_id")} if tracking else None,
        }
        (Path(state.run_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
