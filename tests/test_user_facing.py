"""What a user sees: the start banner, the progress line, the summary, the
MLflow tags and inputs of a run, `hasten plugins --json`, `hasten schema`
and `hasten config`."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

import hasten
from hasten.builtins.core import evaluation_metric
from hasten.builtins.tracking import ui_hint
from hasten.cli import main
from hasten.config import Config, _section_model, validate_config
from hasten.engine import train
from hasten.plugins import Plugin, register_plugin, unregister_plugin
from hasten.testing import tiny_config_dict

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def test_a_tracked_run_says_where_it_lives_and_tags_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    config = validate_config(tiny_config_dict(
        tmp_path, run={"progress": True, "max_steps": 4, "log_every": 2}, eval={"every_steps": 2},
        tracking={"enabled": True, "uri": uri, "experiment": "ux"},
    ))
    config.source = "examples/quickstart.yaml"
    result = train(config)
    err = capsys.readouterr().err
    run_id = result.state.scratch["tracking"]["run_id"]
    lines = err.splitlines()

    # one block at the start, before the first progress line
    first_step = next(i for i, line in enumerate(lines) if line.startswith("step "))
    banner = "\n".join(lines[:first_step])
    assert f"run dir     {result.run_dir}" in banner
    assert f"tracking    {uri}  experiment 'ux'" in banner
    assert f"mlflow run  {run_id}" in banner
    assert f"view it     mlflow ui --backend-store-uri {uri}" in banner
    experiment = MlflowClient(uri).get_experiment_by_name("ux")
    assert f"run page    http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{run_id}" in banner
    # no third-party INFO lines, though this first run created the store
    assert " INFO " not in err, err
    # the end repeats the run id
    assert re.search(rf"^  mlflow run\s+{run_id}$", err, re.M)

    # the last progress line shows the final evaluation, the value the summary prints
    last_progress = [line for line in lines if line.startswith("step ")][-1]
    final = result.state.metrics["val/acc1"]
    assert last_progress.startswith("step 4/4") and f"val/acc1 {final:.4f}" in last_progress
    assert re.search(rf"^  val/acc1\s+{final:.4f}$", err, re.M)
    assert re.search(r"^  flops/train\s+[\d.]+ [kMGT]?MAC$", err, re.M)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    tags = run.data.tags
    assert tags["hasten.run_type"] == "train"
    assert tags["mlflow.runName"] == "t"
    assert tags["mlflow.source.name"] == "hasten examples/quickstart.yaml"
    assert tags["mlflow.user"]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "procedural" and dataset.dataset.source_type == "code"
    assert json.loads(dataset.dataset.profile)["train_samples"] == 256
    assert [t.value for t in dataset.tags if t.key == "mlflow.data.context"] == ["train"]
    [model_output] = run.outputs.model_outputs
    model = client.get_logged_model(model_output.model_id)
    assert model.name == "small_resnet" and model.source_run_id == run_id
    assert model.params["options.width"] == "8"


def test_progress_shows_the_tasks_own_metric():
    assert evaluation_metric("val/acc1", {"knn/acc1": 0.4}) == ("knn/acc1", 0.4)
    assert evaluation_metric("val/acc1", {"val/loss": 0.3, "val/delta1": 0.7, "val/abs_rel": 0.2}) == (
        "val/delta1", 0.7)
    assert evaluation_metric("val/abs_rel", {"val/delta1": 0.7, "val/abs_rel": 0.2}) == ("val/abs_rel", 0.2)


class _ProbeEvaluation(Plugin):
    """A plugin evaluation reported before the task's own (plugins' evaluate runs first)."""

    name = "probe_evaluation"

    @hasten.hookimpl
    def hasten_evaluate(self, state):
        return {"probe/acc1": 0.123456}


def _ssl_config(tmp_path: Path) -> Config:
    return validate_config(tiny_config_dict(
        tmp_path, run={"progress": True, "max_steps": 4, "log_every": 2}, eval={"every_steps": 2},
        task={"name": "ssl", "options": {"method": "simsiam", "knn_k": 20, "knn_bank_size": 256}},
        plugins={"probe_evaluation": {}},
    ))


def _depth_config(tmp_path: Path) -> Config:
    return validate_config(tiny_config_dict(
        tmp_path, run={"progress": True, "max_steps": 4, "log_every": 2}, eval={"every_steps": 2},
        data={"dataset": "procedural_depth", "resolution": 32, "batch_size": 8,
              "options": {"train_size": 32, "val_size": 16, "unlabeled_size": 8}},
        model={"name": "dispnet", "options": {"widths": [8, 16, 32, 64]}}, task={"name": "depth"},
        optim={"name": "adamw", "lr": 0.01, "weight_decay": 0.0}, plugins={"probe_evaluation": {}},
    ))


@pytest.mark.parametrize(("make", "metric"), [(_ssl_config, "knn/acc1"), (_depth_config, "val/delta1")])
def test_the_progress_line_ends_on_the_tasks_metric_the_summary_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, metric: str
):
    register_plugin(_ProbeEvaluation)
    try:
        result = train(make(tmp_path))
    finally:
        unregister_plugin("probe_evaluation")
    err = capsys.readouterr().err
    steps = [line for line in err.splitlines() if line.startswith("step ")]
    final = result.state.metrics[metric]
    # the last line is the final evaluation (step 4), showing the task's metric, not the plugin's
    assert steps[-1].startswith("step 4/4") and f"{metric} {final:.4f}" in steps[-1], steps
    assert "probe/acc1" not in "".join(steps)
    assert any(line.startswith("step 2/4") and f" {metric} " in line for line in steps), steps
    assert re.search(rf"^  {re.escape(metric)}\s+{final:.4f}$", err, re.M)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_keeps_the_final_progress_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("COLUMNS", "200")  # room for the whole line
    result = train(validate_config(tiny_config_dict(
        tmp_path, run={"progress": True, "max_steps": 4, "log_every": 2}, eval={"every_steps": 2})))
    shown = terminal.getvalue()
    final = result.state.metrics["val/acc1"]
    # the bar is drawn on stderr, beside the banner and summary; its last frame, completed, stays above the summary
    before_summary = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown[: shown.index("\nsummary")])  # no ANSI codes
    last_frame = [line for line in re.split(r"[\r\n]", before_summary) if line.strip()][-1]
    assert "4/4" in last_frame and f"val/acc1 {final:.4f}" in last_frame, last_frame
    assert f"loss {result.state.metrics['train/loss']:.4f}" in last_frame


def test_ui_hint_for_servers_and_local_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert ui_hint("http://host:5000/", "3", "abc") == (None, "http://host:5000/#/experiments/3/runs/abc")
    monkeypatch.chdir(tmp_path)
    command, page = ui_hint("sqlite:///mlruns.db", "1", "r")
    assert command == f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlruns.db'}"
    assert page == "http://127.0.0.1:5000/#/experiments/1/runs/r"


def test_every_core_config_field_has_a_description():
    missing = []

    def walk(model, prefix):
        for name, field in model.model_fields.items():
            if name != "source" and not field.description:
                missing.append(prefix + name)
            sub = _section_model(field.annotation)
            if sub is not None:
                walk(sub, f"{prefix}{name}.")

    walk(Config, "")
    assert missing == []


def test_schema_carries_the_descriptions(capsys: pytest.CaptureFixture[str]):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    run = schema["$defs"]["RunConfig"]["properties"]
    assert "optimizer steps" in run["max_steps"]["description"]


class _Defaults(Plugin):
    name = "json_defaults"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ratio: float = 0.5
        steps: tuple[int, int] = (1, 2)
        mode: str | None = None
        enabled: bool = True


def test_plugins_json_writes_defaults_as_json_values(capsys: pytest.CaptureFixture[str]):
    register_plugin(_Defaults)
    try:
        assert main(["plugins", "--json"]) == 0
    finally:
        unregister_plugin("json_defaults")
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["json_defaults"]["settings"] == {"ratio": 0.5, "steps": [1, 2], "mode": None, "enabled": True}


def test_config_command_prints_the_resolved_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.3\nplugins:\n  json_defaults: {ratio: 0.25}\n")
    register_plugin(_Defaults)
    try:
        assert main(["config", str(path), "--set", "run.max_steps=40"]) == 0
    finally:
        unregister_plugin("json_defaults")
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["optim"]["lr"] == 0.3 and resolved["optim"]["momentum"] == 0.9
    assert resolved["run"]["max_steps"] == 40 and resolved["data"]["augment"]["magnitude"] == 5.0
    assert resolved["plugins"]["json_defaults"] == {"ratio": 0.25, "steps": [1, 2], "mode": None, "enabled": True}
    assert validate_config(resolved).optim.lr == 0.3  # the output is a valid config


def test_config_command_refuses_a_bad_plugin_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "c.yaml"
    path.write_text("plugins:\n  json_defaults: {ratoi: 0.25}\n")
    register_plugin(_Defaults)
    try:
        assert main(["config", str(path)]) == 2
    finally:
        unregister_plugin("json_defaults")
    assert "plugins.json_defaults.ratoi: unknown key in plugins.json_defaults (did you mean 'ratio'?)" in (
        capsys.readouterr().err)
