"""The f1clr plugin in real runs: param groups carry the schedule; settings errors are clear."""

from __future__ import annotations

import importlib.metadata as metadata

import pytest

import hasten
from hasten.engine import Trainer
from hasten_f1clr import f1clr


class GroupRecorder(hasten.Plugin):
    """Reads every optimizer param group after the engine applied the step's values."""

    name = "group_recorder"

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[float, float]]] = []
        self.warmup_seen = -1

    @hasten.hookimpl
    def hasten_fit_start(self, state: hasten.State) -> None:
        self.warmup_seen = state.warmup_steps

    @hasten.hookimpl
    def hasten_step_end(self, state: hasten.State, output: hasten.StepOutput) -> None:
        row = []
        for group in state.optimizer.param_groups:
            momentum = group["betas"][0] if "betas" in group else group["momentum"]
            row.append((group["lr"], momentum))
        self.rows.append(row)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_param_groups_carry_the_schedule(tiny_config, optimizer):
    steps, warmup = 12, 4
    config = tiny_config(
        run={"max_steps": steps},
        optim={"name": optimizer, "lr": 123.0, "momentum": 0.5, "betas": [0.5, 0.999]},
        plugins={"f1clr": {"max_lr": 0.02, "warmup_steps": warmup, "momentum_low": 0.8, "momentum_high": 0.9}},
    )
    recorder = GroupRecorder()
    result = Trainer(config, extra_builtins=[recorder]).fit()
    assert result.steps == steps
    assert recorder.warmup_seen == warmup
    assert len(recorder.rows) == steps
    for step, row in enumerate(recorder.rows):
        lr, momentum = f1clr(step, steps, warmup, 0.02, 0.8, 0.9)
        for group_lr, group_momentum in row:
            assert group_lr == pytest.approx(lr, abs=1e-15), step
            assert group_momentum == pytest.approx(momentum, abs=1e-15), step
    # by hand: step 2 = t_w/2 -> 0.01 and 0.85; step 4 = t_w -> 0.02 and 0.8; step 8 = (t_w + L)/2 -> 0.01, 0.85
    assert recorder.rows[2][0] == pytest.approx((0.01, 0.85))
    assert recorder.rows[4][0] == pytest.approx((0.02, 0.80))
    assert recorder.rows[8][0] == pytest.approx((0.01, 0.85))
    assert result.state.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 0.9238795325112867))


def test_warmup_epochs_and_fraction_convert(tiny_config, tmp_path):
    # 256 training samples / batch 16 = 16 steps per epoch; 0.25 epochs = 4 steps
    by_epochs = Trainer(tiny_config(
        run={"max_steps": 40, "run_dir": str(tmp_path / "a")},
        plugins={"f1clr": {"max_lr": 0.1, "warmup_epochs": 0.25}},
    ))
    assert by_epochs.state.warmup_steps == 4
    by_fraction = Trainer(tiny_config(
        run={"max_steps": 40, "run_dir": str(tmp_path / "b")},
        plugins={"f1clr": {"max_lr": 0.1, "warmup_fraction": 0.3}},
    ))
    assert by_fraction.state.warmup_steps == 12


@pytest.mark.parametrize(("settings", "needle"), [
    ({"max_lr": 0.1}, "set exactly one of plugins.f1clr.warmup_steps, plugins.f1clr.warmup_epochs"),
    ({"max_lr": 0.1, "warmup_steps": 3, "warmup_fraction": 0.2}, "(got warmup_steps=3, warmup_fraction=0.2)"),
    ({"max_lr": 0.1, "warmup_steps": 3, "momentum_low": 0.96}, "plugins.f1clr.momentum_low (0.96) must be <="),
    ({"max_lr": -1, "warmup_steps": 3}, "plugins.f1clr.max_lr"),
    ({"warmup_steps": 3}, "plugins.f1clr.max_lr: Field required"),
    ({"max_lr": 0.1, "warmup_steps": 3, "final_lr": 0.2}, "plugins.f1clr.final_lr (0.2) must be below"),
    ({"max_lr": 0.1, "warmup_step": 3}, "plugins.f1clr.warmup_step"),
])
def test_bad_settings_name_the_key(tiny_config, settings, needle):
    with pytest.raises(hasten.UserError) as error:
        Trainer(tiny_config(plugins={"f1clr": settings}))
    assert needle in str(error.value)


@pytest.mark.parametrize(("settings", "needle"), [
    ({"warmup_steps": 6}, "plugins.f1clr.warmup_steps: 6 does not fit the run of 6 steps"),
    ({"warmup_epochs": 1.0}, "plugins.f1clr.warmup_epochs: 1.0 = 16 warm-up steps does not fit the run of 6 steps"),
    ({"warmup_fraction": 0.01}, "plugins.f1clr.warmup_fraction: 0.01 = 0 warm-up steps"),
])
def test_warmup_must_fit_the_run(tiny_config, settings, needle):
    with pytest.raises(hasten.UserError) as error:
        Trainer(tiny_config(plugins={"f1clr": {"max_lr": 0.1, **settings}}))
    assert needle in str(error.value)
    assert "allowed: 0 < warm-up steps < 6" in str(error.value)


def test_a_schedule_section_as_well_is_rejected(tiny_config):
    config = tiny_config(schedule={"name": "cosine"}, plugins={"f1clr": {"max_lr": 0.1, "warmup_steps": 2}})
    with pytest.raises(hasten.UserError) as error:
        Trainer(config)
    message = str(error.value)
    assert message.startswith("schedule: conflicts with plugin 'f1clr'")
    assert "remove the schedule section or the plugin" in message


def test_core_schedule_steps_aside(tiny_config):
    """Without a schedule section the core cosine does not touch the LR: f1clr's values reach the optimizer."""
    config = tiny_config(run={"max_steps": 4}, plugins={"f1clr": {"max_lr": 0.3, "warmup_steps": 2}})
    recorder = GroupRecorder()
    Trainer(config, extra_builtins=[recorder]).fit()
    assert [row[0][0] for row in recorder.rows] == pytest.approx([0.0, 0.15, 0.3, 0.15])


def test_registered_under_its_entry_point():
    found = [ep for ep in metadata.entry_points(group="hasten.plugins") if ep.name == "f1clr"]
    if not found:
        pytest.skip("hasten-f1clr is not installed (run through `tox -e f1clr`)")
    assert found[0].value == "hasten_f1clr.plugin:F1CLR"
    assert found[0].load().provides == ("lr_schedule",)
