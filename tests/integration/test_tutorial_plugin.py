"""A third-party plugin written from docs/plugins.md alone (tests/fixtures/hasten-weightnorm-plugin, not a
shipped example), installed by pip (or uv) into this environment as a user would: found through its
entry point, a bad setting refused naming its key, and its metric logged to MLflow."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hasten.testing import tiny_config_dict

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hasten-weightnorm-plugin"
DISTRIBUTION = "hasten-weightnorm"

pytestmark = pytest.mark.skipif(sys.prefix == sys.base_prefix,
                                reason="installs a package: only inside a virtual environment (tox env `all`)")


def _installer() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("neither pip nor uv to install the plugin with")
    return [uv, "pip"]


def _python_flag(installer: list[str]) -> list[str]:
    return ["--python", sys.executable] if installer[0] != sys.executable else []


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    """The plugin installed from a copy of its folder (the build writes next to the sources); removed after."""
    source = tmp_path_factory.mktemp("plugin") / FIXTURE.name
    shutil.copytree(FIXTURE, source)
    installer = _installer()
    # --no-deps: its one dependency, hasten, is this checkout (not on an index)
    done = subprocess.run([*installer, "install", *_python_flag(installer), "--no-deps", str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield
    finally:
        uninstall = [*installer, "uninstall", *_python_flag(installer)]
        subprocess.run([*uninstall, *(["-y"] if installer[0] == sys.executable else []), DISTRIBUTION],
                       capture_output=True, text=True)


def _hasten(*args: str) -> subprocess.CompletedProcess[str]:
    # a new interpreter, as a user's shell would start: the plugin is found through its entry point only
    return subprocess.run([sys.executable, "-m", "hasten", *args], capture_output=True, text=True)


def test_it_is_listed_with_its_distribution_and_settings(installed) -> None:
    listed = _hasten("plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    row = {r["name"]: r for r in json.loads(listed.stdout)}["weightnorm"]
    assert row["distribution"] == DISTRIBUTION and row["version"] == "0.1.0"
    assert row["settings"] == {"norm_type": 2.0}
    assert "hasten_step_metrics" in row["hooks"]


def _config(tmp_path: Path, settings: dict, **sections) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, plugins={"weightnorm": settings}, **sections)))
    return path


@pytest.mark.parametrize(("settings", "expected"), [
    ({"norm_type": -1}, "plugins.weightnorm.norm_type"),
    ({"norm_typ": 1}, "plugins.weightnorm.norm_typ: unknown key in plugins.weightnorm (did you mean 'norm_type'?)"),
])
def test_a_bad_setting_is_refused_naming_the_key(installed, tmp_path: Path, settings: dict, expected: str) -> None:
    refused = _hasten("train", str(_config(tmp_path, settings)))
    assert refused.returncode == 2, refused.stderr
    assert expected in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any work


def test_it_logs_its_metric_to_mlflow(installed, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    config = _config(tmp_path, {}, run={"max_steps": 4, "log_every": 2},
                     tracking={"enabled": True, "uri": uri, "experiment": "tutorial"})
    trained = _hasten("train", str(config), "--quiet")
    assert trained.returncode == 0, trained.stderr
    run_dir = tmp_path / "run"
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    history = {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, "weights/norm")}
    assert sorted(history) == [1, 3]  # the logging steps
    # the last value is the norm of the final weights (parameters, not BatchNorm statistics)
    weights = torch.load(run_dir / "artifacts" / "weights.pt", weights_only=True)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    parameters = [v for k, v in weights.items() if not k.endswith(buffers)]
    expected = float(torch.linalg.vector_norm(torch.cat([v.flatten().double() for v in parameters])))
    assert history[3] == pytest.approx(expected, rel=1e-5)
    assert history[1] != history[3]  # the weights moved between the logged steps
