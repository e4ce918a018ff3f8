"""A third-party plugin written from docs/plugins.md alone
(examples/hasten-gradnorm-plugin), installed as its own distribution: found
through its entry point, listed, validated, and its metric logged to MLflow."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import hasten
from hasten.engine import Trainer, train
from hasten.plugins import installed_plugins, register_plugin, unregister_plugin

pytest.importorskip("hasten_gradnorm", reason="examples/hasten-gradnorm-plugin is installed in the tox env `all`")


def test_it_is_found_and_listed_with_json_defaults():
    info = installed_plugins()["gradnorm"]
    assert info.distribution == "hasten-gradnorm" and info.error is None
    assert {"hasten_after_backward", "hasten_step_metrics", "hasten_add_commands"} <= set(info.hooks)
    proc = subprocess.run([sys.executable, "-m", "hasten", "plugins", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["gradnorm"]["settings"] == {"norm_type": 2.0, "warn_above": None}


def test_a_settings_typo_names_its_keys(tiny_config):
    with pytest.raises(hasten.UserError) as info:
        Trainer(tiny_config(plugins={"gradnorm": {"norm_typ": 1}}))
    assert "plugins.gradnorm.norm_typ: unknown key in plugins.gradnorm (did you mean 'norm_type'?); " \
        "allowed: norm_type, warn_above" in str(info.value)


class _Reference(hasten.Plugin):
    """Records torch's own total gradient norm at every backward (registered after gradnorm)."""

    name = "reference_norm"
    norms: ClassVar[list[float]] = []

    @hasten.hookimpl
    def hasten_after_backward(self, state: hasten.State) -> None:
        grads = [p.grad for p in state.model.parameters() if p.grad is not None]
        type(self).norms.append(float(torch.nn.utils.get_total_norm(grads, 2.0)))


def test_it_logs_the_gradient_norm_to_mlflow(tmp_path: Path, tiny_config):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    _Reference.norms = []
    register_plugin(_Reference)
    try:
        result = train(tiny_config(
            run={"max_steps": 4, "log_every": 2}, tracking={"enabled": True, "uri": uri},
            plugins={"gradnorm": {}, "reference_norm": {}},
        ))
    finally:
        unregister_plugin("reference_norm")
    assert len(_Reference.norms) == 4
    run_id = result.state.scratch["tracking"]["run_id"]
    client = MlflowClient(uri)
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "grad/norm")}
    largest = {m.step: m.value for m in client.get_metric_history(run_id, "grad/norm_max")}
    assert sorted(logged) == [1, 3]
    for step in (1, 3):
        assert math.isclose(logged[step], _Reference.norms[step], rel_tol=1e-5)
        assert math.isclose(largest[step], max(_Reference.norms[step - 1 : step + 1]), rel_tol=1e-5)


def test_its_command(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "data: {dataset: procedural, resolution: 16, batch_size: 16, options: {train_size: 64, val_size: 16}}\n"
        f"model: {{options: {{width: 8}}}}\nrun: {{run_dir: {tmp_path / 'run'}}}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "hasten", "grad-norm", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split()[-1]) > 0
