"""Super-Progressive takes its full-resolution phase from F1-CLR's fixed warm-up,
whichever of the two the config lists first."""

from __future__ import annotations

import pytest

import hasten
from hasten.engine import train
from hasten.plugins import installed_plugins, register_plugin, unregister_plugin

pytest.importorskip("hasten_progressive", reason="plugins/progressive is installed in the tox env `all`")
pytest.importorskip("hasten_f1clr", reason="plugins/f1clr is installed in the tox env `all`")

from hasten_f1clr.plugin import F1CLR
from hasten_progressive import Progressive


class SizeProbe(hasten.Plugin):
    """Records the spatial size and the LR of every trained batch."""

    name = "size_probe"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.sizes: list[int] = []
        self.lrs: list[float] = []

    @hasten.hookimpl
    def hasten_setup(self, state):
        state.scratch[self.name] = self

    @hasten.hookimpl
    def hasten_forward(self, state, batch):
        self.sizes.append(int(batch.views[0].shape[-1]))
        self.lrs.append(state.lr)


@pytest.fixture(scope="module", autouse=True)
def plugins_available():
    """Entry points in the tox env; registered in code when run from a source tree (PYTHONPATH)."""
    register_plugin(SizeProbe)
    added = ["size_probe"]
    for cls in (Progressive, F1CLR):
        info = installed_plugins().get(cls.name)
        if info is None or info.plugin_class is None:
            register_plugin(cls)
            added.append(cls.name)
    yield
    for name in added:
        unregister_plugin(name)


@pytest.mark.parametrize("progressive_first", [True, False])
def test_full_resolution_during_f1clr_warmup(tiny_config, progressive_first):
    progressive = ("progressive", {"min_resolution": 8, "resolution_step": 4})
    f1clr = ("f1clr", {"max_lr": 0.05, "warmup_steps": 3})
    plugins = dict([progressive, f1clr] if progressive_first else [f1clr, progressive])
    plugins["size_probe"] = {}
    config = tiny_config(run={"max_steps": 9, "log_every": 1}, data={"batch_size": 4}, plugins=plugins)
    assert "schedule" not in config.model_fields_set  # f1clr owns the LR schedule
    result = train(config)
    assert result.state.warmup_steps == 3
    assert result.state.scratch["progressive"]["warmup_steps"] == 3
    probe = result.state.scratch["size_probe"]
    # 9 steps, t_w 3, 8 -> 16 by 4: 16 px while the LR rises, then 3 stages of 2 steps each
    assert probe.sizes == [16, 16, 16, 8, 8, 12, 12, 16, 16]
    assert probe.lrs[0] < probe.lrs[1] < probe.lrs[2] < probe.lrs[3] == pytest.approx(0.05)  # f1clr's warm-up


def test_the_fast_recipe_plans_and_trains(tmp_path):
    """examples/fast.yaml (selection + super-progressive + F1-CLR) validates, plans fewer FLOPs than the
    same length without plugins, and trains a few steps with every plugin active."""
    pytest.importorskip("hasten_selection", reason="plugins/selection is installed in the tox env `all`")
    from pathlib import Path

    from hasten.commands.estimate import estimate
    from hasten.config import load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "fast.yaml"
    report = estimate(load_config(example))
    assert report["ratio"] < 1.0  # cheaper than the same steps at full resolution, selection overhead included
    config = load_config(example, [f"run.run_dir={tmp_path / 'run'}", "run.max_steps=12", "tracking.enabled=false",
                                   "run.progress=false", "eval.every_steps=12", "data.options.train_size=512",
                                   "plugins.selection.warmup_steps=2"])
    result = train(config)
    assert result.stop_reason is None and result.steps == 12
    assert result.metrics["flops/overhead/selection"] > 0
