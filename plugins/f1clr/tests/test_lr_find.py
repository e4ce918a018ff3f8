"""The LR range test: the sweep, the suggestion rules, the plot, the CLI on examples/quickstart.yaml."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from conftest import REPO

import hasten
from hasten.checkpoint import has_checkpoints
from hasten.cli import main as cli_main
from hasten.engine import Trainer
from hasten_f1clr.lr_find import (
    FALL_FRACTION,
    RangeTest,
    exponential_lrs,
    lr_find,
    lr_find_config,
    smooth,
    suggest_lrs,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: quickstart.yaml shrunk so a sweep takes seconds: 16 px, a narrow ResNet, small splits
SMALL = [
    "--set", "run.progress=false", "--set", "tracking.enabled=false",
    "--set", "data.resolution=16", "--set", "data.batch_size=32", "--set", "model.options.width=8",
    "--set", "data.options.train_size=256", "--set", "data.options.val_size=64",
]


def test_exponential_sweep_by_hand():
    lrs = exponential_lrs(1e-3, 1.0, 200)
    assert len(lrs) == 200
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1.0)
    assert lrs[199 // 2] == pytest.approx(1e-3 * 1000 ** (99 / 199))
    assert all(b / a == pytest.approx(1000 ** (1 / 199)) for a, b in itertools.pairwise(lrs))


def test_smoothing_is_debiased():
    # constant input: the debiased EMA is that constant from the first step
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)
    # by hand, beta = 0.5: m = 0.5, 1.25 -> /0.5, /0.75 = 1.0, 1.6667
    assert smooth([1.0, 2.0], beta=0.5) == pytest.approx([1.0, 1.25 / 0.75])


def test_suggestion_rules_on_a_known_curve():
    """Flat at 2.3 for 40 steps, linear fall to 0.5 at step 120, then a steep rise: the rules find the
    start of the fall and the minimum within a few steps of the truth."""
    lrs = exponential_lrs(1e-3, 1.0, 160)
    losses = [2.3 if t < 40 else 2.3 - 1.8 * (t - 40) / 80 if t <= 120 else 0.5 + 0.3 * (t - 120) for t in range(160)]
    s = suggest_lrs(lrs, losses, reached_end=False)
    # by hand: the loss has covered 10% of the 1.8 fall at 40 + 0.1 * 80 = step 48
    assert abs(s.min_index - (40 + FALL_FRACTION * 80)) <= 3
    assert abs(s.max_index - 120) <= 4
    assert s.min_lr == lrs[s.min_index] and s.max_lr == lrs[s.max_index]
    assert lrs[0] <= s.min_lr <= s.max_lr <= lrs[-1]
    assert s.notes == []


def test_suggestion_notes():
    lrs = exponential_lrs(1e-3, 1.0, 50)
    falling = [3.0 - 0.04 * t for t in range(50)]
    assert "still falling" in suggest_lrs(lrs, falling).notes[0]
    rising = [1.0 + 0.1 * t for t in range(50)]
    s = suggest_lrs(lrs, rising)
    assert "never fell" in s.notes[0] and s.min_lr == s.max_lr == lrs[0]
    # non-finite losses after a divergence are ignored
    s = suggest_lrs(lrs[:30], [*falling[:25], math.inf, math.nan, 1e9, 1e9, 1e9], reached_end=False)
    assert s.max_index <= 24


class LRRecorder(hasten.Plugin):
    name = "lr_recorder"

    def __init__(self) -> None:
        super().__init__()
        self.lrs: list[float] = []

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        self.lrs.append(state.optimizer.param_groups[0]["lr"])


def test_sweep_config_drops_the_schedule_and_drives_the_optimizer(tiny_config):
    config = tiny_config(
        schedule={"name": "warmup_cosine", "warmup_steps": 2},
        run={"epochs": 3.0, "max_steps": None, "checkpoint_every": 2},
    )
    sweep = lr_find_config(config, steps=8)
    assert "schedule" not in sweep.model_fields_set
    assert sweep.run.max_steps == 8 and sweep.run.epochs is None and sweep.run.checkpoint_every is None
    assert sweep.run.run_dir.endswith("-lr-find") and sweep.run.name == "t-lr-find"
    with_f1clr = tiny_config(plugins={"f1clr": {"max_lr": 0.1, "warmup_steps": 2}})
    assert "f1clr" not in lr_find_config(with_f1clr, steps=8).plugins

    sweep = lr_find_config(config, steps=6)
    recorder, helper = LRRecorder(), RangeTest(1e-3, 1.0, 6, 32)
    trainer = Trainer(sweep, extra_builtins=[helper, recorder])
    trainer.fit()
    assert recorder.lrs == pytest.approx(exponential_lrs(1e-3, 1.0, 6))
    assert len(helper.losses) == len(helper.smoothed) == len(helper.val_losses) == 6

    # The validation loss leaves every BatchNorm buffer as training left it.
    model = trainer.state.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert helper.batch_norms
    loss = helper._validation_loss(trainer.state)
    assert math.isfinite(float(loss)) and model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(m.track_running_stats for m in helper.batch_norms)


def test_stops_when_the_loss_diverges(tiny_config, tmp_path):
    result = lr_find(tiny_config(), min_lr=10.0, max_lr=1e4, steps=16, val_samples=16, plot=tmp_path / "d.png")
    assert result.stop_reason is not None and result.stop_reason.startswith("diverged")
    assert len(result.lrs) < 16
    finite = [v for v in result.smoothed if math.isfinite(v)]
    assert len(finite) < len(result.smoothed) or result.smoothed[-1] > 4 * min(finite[:-1])
    assert (tmp_path / "d.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_on_quickstart(tmp_path, capsys):
    """`hasten lr-find examples/quickstart.yaml` (made small with --set): a suggestion inside the sweep, a plot."""
    plot = tmp_path / "lr.png"
    code = cli_main([
        "lr-find", str(REPO / "examples" / "quickstart.yaml"), *SMALL,
        "--set", f"run.run_dir={tmp_path / 'run'}", "--steps", "24", "--min-lr", "0.01", "--max-lr", "10",
        "--val-samples", "64", "--plot", str(plot),
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert "LR range test: 0.01 -> 10 over 24 steps" in out
    values = {}
    for line in out.splitlines():
        if line.startswith(("suggested min LR:", "suggested max LR:")):
            values[line.split(":")[0]] = float(line.split(":")[1].split()[0])
            assert "rule:" in line
    assert set(values) == {"suggested min LR", "suggested max LR"}
    assert 0.01 <= values["suggested min LR"] <= values["suggested max LR"] <= 10
    # a throw-away run: its directory holds no checkpoint
    assert (tmp_path / "run-lr-find").is_dir()
    assert not has_checkpoints(tmp_path / "run-lr-find")


def test_bad_sweep_arguments_name_the_flag(tiny_config):
    with pytest.raises(hasten.UserError, match=r"--max-lr: must be above --min-lr \(0.1\), got 0.01"):
        lr_find(tiny_config(), min_lr=0.1, max_lr=0.01)
    with pytest.raises(hasten.UserError, match="--steps: need at least 2 steps, got 1"):
        lr_find(tiny_config(), steps=1)


def test_plot_logged_to_mlflow(tiny_config, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    config = tiny_config(tracking={"enabled": True, "uri": uri, "experiment": "lrf", "asynchronous": False})
    result = lr_find(config, min_lr=1e-3, max_lr=1.0, steps=4, val_samples=16)
    assert Path(result.plot) == Path(result.run_dir) / "lr_find.png"
    client = mlflow.tracking.MlflowClient(uri)
    artifacts = [a.path for a in client.list_artifacts(result.tracked_run)]
    assert "lr_find.png" in artifacts
    run = client.get_run(result.tracked_run)
    assert run.data.metrics["lr_find/suggested_max_lr"] == pytest.approx(result.suggestion.max_lr)
    history = client.get_metric_history(result.tracked_run, "lr_find/smoothed_loss")
    assert len(history) == 4
