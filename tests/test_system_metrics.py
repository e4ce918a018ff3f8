"""`tracking.system_metrics`: MLflow's system metrics (CPU, memory, disk, network) beside the run's own,
off by default; without psutil a clear error before anything starts."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import yaml

import hasten
from hasten.cli import main
from hasten.config import validate_config
from hasten.engine import train
from hasten.plugins import register_plugin, unregister_plugin
from hasten.testing import tiny_config_dict

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def _tracked(tmp_path: Path, **tracking) -> dict:
    return tiny_config_dict(tmp_path, tracking={"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlruns.db'}",
                                                "experiment": "sys", **tracking})


def test_system_metrics_without_psutil_is_refused_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` fails as when it is not installed
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_tracked(tmp_path)))
    assert main(["train", str(config), "--set", "tracking.system_metrics=true"]) == 2
    err = capsys.readouterr().err
    assert "tracking.system_metrics" in err and "pip install psutil" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "mlruns.db").exists()


class _Slow(hasten.Plugin):
    """0.2 s per step: a run long enough for several system-metric samples."""

    name = "slow_steps"

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State) -> None:
        time.sleep(0.2)


def test_system_metrics_are_logged_beside_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psutil")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    register_plugin(_Slow)
    try:
        on = train(validate_config({**_tracked(tmp_path / "on", system_metrics=True), "plugins": {"slow_steps": {}}}))
        off = train(validate_config(_tracked(tmp_path / "off")))
    finally:
        unregister_plugin("slow_steps")
    client = MlflowClient(f"sqlite:///{tmp_path / 'on' / 'mlruns.db'}")
    run_id = on.state.scratch["tracking"]["run_id"]
    logged = client.get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(logged), logged
    assert 0 <= logged["system/cpu_utilization_percentage"] <= 100 * (os.cpu_count() or 1)
    history = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(history) >= 2 and sorted(m.step for m in history) == list(range(len(history)))
    assert "val/acc1" in logged  # the run's own metrics beside them
    off_client = MlflowClient(f"sqlite:///{tmp_path / 'off' / 'mlruns.db'}")
    off_logged = off_client.get_run(off.state.scratch["tracking"]["run_id"]).data.metrics
    assert "val/acc1" in off_logged and not [k for k in off_logged if k.startswith("system/")]  # off by default
