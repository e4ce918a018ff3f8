"""`hasten estimate` against the FLOPs real runs log, and `hasten compare` on two short runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_config_dict
from pydantic import BaseModel, ConfigDict, Field

import hasten
from hasten.cli import main as cli_main
from hasten.config import validate_config
from hasten.engine import train
from hasten.plugins import register_plugin, unregister_plugin


class TwoStageResolution(hasten.Plugin):
    """Trains the first ``low_fraction`` of steps at ``low`` px, the rest at full
    resolution, and reports a fixed overhead per trained sample (both in
    training and in the plan, as a real plugin would)."""

    name = "two_stage_resolution"
    provides = ("resolution_schedule",)

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        low: int = Field(8, gt=0)
        low_fraction: float = Field(0.5, gt=0, lt=1)
        overhead_per_sample: float = Field(1000.0, ge=0)

    def resolution_at(self, state: hasten.State, step: int) -> int:
        return self.settings.low if step < self.settings.low_fraction * state.total_steps else state.max_resolution

    @hasten.hookimpl
    def hasten_step_start(self, state: hasten.State) -> None:
        state.resolution = self.resolution_at(state, state.step)

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        state.flops.add_overhead(self.name, self.settings.overhead_per_sample * output.num_samples)

    @hasten.hookimpl
    def hasten_plan_step(self, state: hasten.State, step: int, batch_size: int) -> dict[str, float]:
        return {self.name: self.settings.overhead_per_sample * batch_size}

    @hasten.hookimpl
    def hasten_plan_summary(self, state: hasten.State, resolutions: list[int]) -> dict[str, Any]:
        """Its own closed-form estimate (the core computes none): the share of steps at low resolution."""
        share = sum(r == self.settings.low for r in resolutions) / len(resolutions)
        return {"key": "two_stage", "figures": {"low_share": share}, "lines": [f"two-stage low share: {share:.2f}"]}


@pytest.fixture
def two_stage():
    register_plugin(TwoStageResolution)
    yield TwoStageResolution
    unregister_plugin(TwoStageResolution.name)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_estimate_matches_the_flops_real_runs_log(tmp_path: Path, two_stage, capsys) -> None:
    steps = 8
    sections: dict[str, Any] = {"run": {"max_steps": steps, "log_every": 4}, "eval": {"every_steps": 100}}
    with_plugin = tiny_config_dict(tmp_path, **sections, plugins={"two_stage_resolution": {"low": 8}})
    config_file = write_config(tmp_path / "progressive.yaml", with_plugin)

    assert cli_main(["estimate", str(config_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    planned, baseline = report["config"], report["baseline"]
    assert planned["steps"] == baseline["steps"] == steps
    # the loader's work: one batch per step (no plugin here asks for a candidate batch)
    assert planned["samples_loaded"] == baseline["samples_loaded"] == steps * baseline["batch_size"]
    assert [(p["first_step"], p["last_step"], p["resolution"]) for p in planned["phases"]] == [(0, 3, 8), (4, 7, 16)]
    assert [p["resolution"] for p in baseline["phases"]] == [16]
    assert planned["overhead"] == {"two_stage_resolution": pytest.approx(1000.0 * 16 * steps)}
    assert baseline["overhead_flops"] == 0
    # the plugin's own estimate (hasten_plan_summary); the core adds no formula of its own
    assert report["two_stage"] == {"low_share": 0.5}
    assert "quadratic" not in report and report["varying_resolution"] is True

    # The estimate ran nothing that a later real run could inherit: train both now.
    staged = tiny_config_dict(tmp_path / "a", **sections, plugins={"two_stage_resolution": {"low": 8}})
    real = train(validate_config(staged))
    plain = train(validate_config(tiny_config_dict(tmp_path / "b", **sections)))
    assert real.metrics["train/resolution"] == 16
    assert planned["total_flops"] == pytest.approx(real.metrics["flops/total"], rel=0.01)
    assert planned["overhead_flops"] == pytest.approx(real.metrics["flops/overhead"], rel=0.01)
    assert baseline["total_flops"] == pytest.approx(plain.metrics["flops/total"], rel=0.01)
    assert report["ratio"] == pytest.approx(real.metrics["flops/total"] / plain.metrics["flops/total"], rel=0.01)
    assert 0.5 < report["ratio"] < 0.8  # a quarter of the cost for half the steps, plus a small overhead

    assert cli_main(["estimate", str(config_file)]) == 0
    text = capsys.readouterr().out
    assert "no plugins" in text and "two-stage low share: 0.50" in text and "0-3 (4)" in text
    assert "eq. 3.9" not in text


def test_estimate_reports_bad_overrides(tmp_path: Path, capsys) -> None:
    config_file = write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path))
    assert cli_main(["estimate", str(config_file), "--set", "optim.lr=-1"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_compare_two_short_runs_table_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the default local store (sqlite:///mlruns.db) lives here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    common: dict[str, Any] = {"eval": {"every_steps": 2}, "tracking": {"enabled": True, "experiment": "compare"}}
    base = tiny_config_dict(tmp_path / "base", **common, run={"name": "base", "max_steps": 6, "log_every": 2})
    short = tiny_config_dict(tmp_path / "short", **common, run={"name": "short", "max_steps": 4, "log_every": 2})
    files = [write_config(tmp_path / "base.yaml", base), write_config(tmp_path / "short.yaml", short)]
    plot = tmp_path / "cmp.png"

    assert cli_main(["compare", *map(str, files), "--plot", str(plot), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric"] == "val/acc1" and report["higher_is_better"]
    first, second = report["runs"]
    assert (first["steps"], second["steps"]) == (6, 4)
    assert report["target"] == first["final"]
    assert second["total_flops"] == pytest.approx(first["total_flops"] * 4 / 6)
    assert 0 < first["flops_to_target"] <= first["total_flops"]
    assert first["flops_speedup"] == pytest.approx(1.0)
    if second["flops_to_target"] is None:
        assert second["flops_speedup"] is None
    else:  # reached at an evaluation after step 2 or 4: cost 1/3 or 2/3 of the baseline's whole run
        assert second["flops_speedup"] == pytest.approx(first["flops_to_target"] / second["flops_to_target"])
        assert second["flops_to_target"] / first["total_flops"] in (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert first["wall_time"] > 0 and first["time_to_target"] <= first["wall_time"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000

    # The same runs by id, read from the store, with a target nobody reaches.
    ids = [first["run_id"], second["run_id"]]
    assert cli_main(["compare", *ids, "--uri", "sqlite:///mlruns.db", "--target", "1.5",
                     "--plot", str(tmp_path / "again.png")]) == 0
    table = capsys.readouterr().out
    assert "target: val/acc1 >= 1.5000" in table
    assert table.count("not reached") == 4  # FLOPs and time, for both runs
    # labelled by run name (and short id), never by a path; one named column per speed-up definition
    rows = table.splitlines()[3:5]
    assert rows[0].startswith(f"base ({ids[0][:8]})") and rows[1].startswith(f"short ({ids[1][:8]})")
    assert str(tmp_path) not in "".join(rows)
    assert "compute speed-up" in table and "wall-time speed-up" in table
    assert "compute speed-up = the first run's multiply-adds to target / this run's" in table
    assert f"warning: base ({ids[0][:8]}) never reached the target" in table
    assert f"warning: short ({ids[1][:8]}) never reached the target" in table
    assert (tmp_path / "again.png").is_file()

    # A target at chance (the tiny data have 10 classes: chance 0.1) is flagged.
    assert cli_main(["compare", *ids, "--uri", "sqlite:///mlruns.db", "--target", "0.12", "--json",
                     "--plot", str(tmp_path / "again.png")]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert any("near chance (0.1000 for 10 classes)" in w for w in warnings), warnings


def test_compare_unknown_run_id_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_main(["compare", "0123456789abcdef", "--uri", f"sqlite:///{tmp_path / 'empty.db'}"]) == 2
    assert "0123456789abcdef" in capsys.readouterr().err
