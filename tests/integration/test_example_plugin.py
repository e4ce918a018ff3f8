"""The tutorial plugin, installed as its own distribution, is found through its
entry point, listed, validated and called."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import hasten
from hasten.engine import train
from hasten.plugins import installed_plugins

pytest.importorskip("hasten_ema", reason="examples/hasten-example-plugin is installed in the tox env `all`")


def test_entry_point_plugin_is_discovered():
    info = installed_plugins()["ema"]
    assert info.distribution == "hasten-ema"
    assert info.error is None
    assert "hasten_step_end" in info.hooks and "hasten_evaluate" in info.hooks


def test_hasten_plugins_lists_it_with_settings():
    proc = subprocess.run([sys.executable, "-m", "hasten", "plugins", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["ema"]["distribution"] == "hasten-ema"
    assert rows["ema"]["settings"] == {"decay": 0.99, "every": 1}  # JSON values, not reprs


def test_settings_are_validated(tiny_config):
    with pytest.raises(hasten.UserError, match=r"plugins\.ema\.decay"):
        train(tiny_config(plugins={"ema": {"decay": 1.5}}))


def test_it_is_called(tiny_config):
    result = train(tiny_config(run={"max_steps": 4}, plugins={"ema": {"decay": 0.5}}))
    assert 0.0 <= result.metrics["ema/acc1"] <= 1.0
    assert "ema/loss" in result.metrics
    # The average differs from the weights it follows, so the plugin really ran.
    assert result.metrics["ema/loss"] != result.metrics["val/loss"]


def test_schema_includes_plugin_settings():
    from hasten.commands.schema import config_schema

    schema = config_schema()
    assert "decay" in json.dumps(schema["properties"]["plugins"]["properties"]["ema"])
