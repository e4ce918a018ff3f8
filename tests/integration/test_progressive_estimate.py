"""`hasten estimate` predicts the speed-up of Super-Progressive learning that an actual run counts.

96 -> 224 px (resolution step 32) over 12 steps with a warm-up of 2 (1/6 of
the run): a full-resolution phase and 5 ramp stages of 2 steps each. The
estimate's counted speed-up must lie within 2% of flops/total(no plugin) /
flops/total(progressive) of two real runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hasten.config import validate_config
from hasten.engine import train
from hasten.plugins import installed_plugins, register_plugin, unregister_plugin

pytest.importorskip("hasten_progressive", reason="plugins/progressive is installed in the tox env `all`")
pytest.importorskip("hasten.commands.estimate", reason="`hasten estimate` is not in this core yet")

from hasten_progressive import Progressive

STEPS, WARMUP = 12, 2


def config_dict(tmp_path: Path, with_plugin: bool) -> dict[str, Any]:
    """Tiny but at the research's sizes: 224 px procedural images, a small_resnet of width 4 with a
    stride-2 stem (a quarter of the compute of stride 1), batch 4."""
    data: dict[str, Any] = {
        "run": {"name": "prog", "seed": 0, "max_steps": STEPS, "log_every": STEPS, "progress": False,
                "run_dir": str(tmp_path / ("prog" if with_plugin else "base"))},
        "data": {"dataset": "procedural", "resolution": 224, "batch_size": 4,
                 "options": {"train_size": 16, "val_size": 4, "unlabeled_size": 4}},
        "model": {"name": "small_resnet", "options": {"width": 4, "stem_stride": 2}},
        "optim": {"lr": 0.05},
        # The plugin's warm-up defaults to the LR schedule's: 2 of 12 steps.
        "schedule": {"name": "warmup_cosine", "warmup_steps": WARMUP},
        "eval": {"batch_size": 4, "every_steps": 1000, "max_batches": 1},
        "tracking": {"enabled": False},
    }
    if with_plugin:
        data["plugins"] = {"progressive": {"min_resolution": 96, "resolution_step": 32}}
    return data


def run_estimate(config_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """`hasten estimate CONFIG --json`: the installed CLI when the plugin is installed (tox `all`),
    else the same CLI entry in this process with the plugin registered in code."""
    info = installed_plugins().get("progressive")
    if info is not None and info.distribution == "hasten-progressive":
        proc = subprocess.run(
            [sys.executable, "-m", "hasten", "estimate", str(config_path), "--json"],
            capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    from hasten.cli import main

    register_plugin(Progressive)
    try:
        capsys.readouterr()
        assert main(["estimate", str(config_path), "--json"]) == 0
        return json.loads(capsys.readouterr().out)
    finally:
        unregister_plugin("progressive")


def test_estimate_matches_counted_flops_of_a_real_run(tmp_path, capsys):
    config_path = tmp_path / "progressive.yaml"
    config_path.write_text(yaml.safe_dump(config_dict(tmp_path, with_plugin=True)))
    report = run_estimate(config_path, capsys)

    # The per-stage breakdown: warm-up at 224, then 96 -> 224 in 5 stages of 2 steps.
    phases = [(p["first_step"], p["steps"], p["resolution"]) for p in report["config"]["phases"]]
    assert phases == [(0, 2, 224), (2, 2, 96), (4, 2, 128), (6, 2, 160), (8, 2, 192), (10, 2, 224)]
    # Eq. 3.9's cost ~ r^2 estimate of this schedule: 6 / (2 + sum_k (r_k/224)^2) = 1.598
    assert report["quadratic"]["r2_cost_speedup"] == pytest.approx(1.598, abs=1e-3)

    # The real runs, with and without the plugin.
    added = installed_plugins().get("progressive") is None
    if added:
        register_plugin(Progressive)
    try:
        progressive = train(validate_config(config_dict(tmp_path, with_plugin=True)))
    finally:
        if added:
            unregister_plugin("progressive")
    baseline = train(validate_config(config_dict(tmp_path, with_plugin=False)))
    counted = baseline.metrics["flops/total"] / progressive.metrics["flops/total"]
    print(f"estimate speed-up {report['speedup']:.4f}x, counted {counted:.4f}x, "
          f"r^2 estimate {report['quadratic']['r2_cost_speedup']:.4f}x")

    assert report["speedup"] == pytest.approx(counted, rel=0.02)
    # counted FLOPs scale close to r^2 for a CNN: the quadratic estimate is near the real figure
    assert counted == pytest.approx(report["quadratic"]["r2_cost_speedup"], rel=0.05)
    assert report["config"]["total_flops"] == pytest.approx(progressive.metrics["flops/total"], rel=0.02)
