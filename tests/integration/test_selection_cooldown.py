"""Selection and cool-down together (their real distributions): cool-down turns selection off."""

from __future__ import annotations

import pytest

import hasten
from hasten.engine import train
from hasten.plugins import installed_plugins, register_plugin, unregister_plugin

pytest.importorskip("hasten_selection", reason="plugins/selection is installed in the tox env `all`")
pytest.importorskip("hasten_cooldown", reason="plugins/cooldown is installed in the tox env `all`")

from hasten_cooldown.plugin import Cooldown
from hasten_selection.plugin import Selection


@pytest.fixture(scope="module", autouse=True)
def plugins_available():
    """Entry points in the tox env; registered in code when run from a source tree (PYTHONPATH)."""
    added = []
    for cls in (Selection, Cooldown):
        info = installed_plugins().get(cls.name)
        if info is None or info.plugin_class is None:
            register_plugin(cls)
            added.append(cls.name)
    yield
    for name in added:
        unregister_plugin(name)


class Probe(hasten.Plugin):
    """Listed first: records the delivered and the trained batch sizes and the logged phases."""

    name = "probe_sc"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.delivered: list[int] = []
        self.trained: list[int] = []
        self.phases: dict[int, tuple[float, float]] = {}

    @hasten.hookimpl
    def hasten_setup(self, state):
        state.scratch["probe"] = self

    @hasten.hookimpl
    def hasten_select(self, state, batch):
        self.delivered.append(len(batch))

    @hasten.hookimpl
    def hasten_forward(self, state, batch):
        self.trained.append(len(batch))

    @hasten.hookimpl
    def hasten_log(self, state, metrics, step):
        if "selection/active" in metrics:
            self.phases[step] = (metrics["selection/active"], metrics["cooldown/active"])


def test_cooldown_stops_selection(tiny_config, tmp_path):
    register_plugin(Probe)
    plugins = {"probe_sc": {}, "cooldown": {"steps": 2}, "selection": {"warmup_steps": 1}}
    try:
        config = tiny_config(run={"max_steps": 6, "log_every": 1}, plugins=plugins)
        result = train(config)
        from hasten.commands.estimate import plan

        planned = plan(tiny_config(run={"max_steps": 6, "run_dir": str(tmp_path / "plan")}, plugins=plugins))
    finally:
        unregister_plugin("probe_sc")
    probe, state = result.state.scratch["probe"], result.state
    # warm-up (uniform) | selection | cool-down (uniform)
    assert probe.delivered == [16, 32, 32, 32, 16, 16]
    assert probe.trained == [16] * 6
    assert state.images_loaded == 3 * 16 + 3 * 32
    assert probe.phases == {0: (0.0, 0.0), 1: (1.0, 0.0), 2: (1.0, 0.0), 3: (1.0, 0.0), 4: (0.0, 1.0), 5: (0.0, 1.0)}
    scoring = state.flops.forward_per_sample(state.task.model, (3, 8, 8))
    assert state.flops.overhead["selection"] == pytest.approx(3 * 32 * scoring)
    # `hasten estimate` plans exactly the overhead the run reported.
    assert planned.overhead["selection"] == pytest.approx(state.flops.overhead["selection"])
