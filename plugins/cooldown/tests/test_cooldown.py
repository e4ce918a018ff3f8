"""Cool-down: phase arithmetic, the sampling veto in a real run, the phase-switch report, settings."""

from __future__ import annotations

import pytest

import hasten
from hasten.engine import Trainer, train
from hasten.plugins import register_plugin, unregister_plugin
from hasten_cooldown import cooldown_start, cooldown_steps, in_cooldown


def test_phase_arithmetic():
    assert cooldown_steps(100) == 10  # default 10%
    assert cooldown_steps(100, fraction=0.25) == 25
    assert cooldown_steps(100, steps=7) == 7
    assert cooldown_steps(95, fraction=0.1) == 10  # round(9.5) -> banker's 10
    assert cooldown_start(100, 10) == 90
    assert [in_cooldown(t, 100, 10) for t in (0, 89, 90, 99)] == [False, False, True, True]
    assert not any(in_cooldown(t, 100, 0) for t in range(100))
    with pytest.raises(ValueError):
        cooldown_steps(100, fraction=0.1, steps=3)
    with pytest.raises(ValueError):
        cooldown_steps(10, steps=11)


class Sampler(hasten.Plugin):
    """A stand-in sampling plugin: asks for 2b samples whenever sampling is active, records what it saw."""

    name = "sampler"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.asked: dict[int, bool] = {}
        self.delivered: list[int] = []
        self.logged: dict[int, float] = {}

    @hasten.hookimpl
    def hasten_setup(self, state):
        state.scratch["sampler"] = self

    @hasten.hookimpl
    def hasten_batch_size(self, state, step):
        self.asked[step] = state.sampling_active(step)
        return 2 * state.batch_size if self.asked[step] else None

    @hasten.hookimpl
    def hasten_select(self, state, batch):
        self.delivered.append(len(batch))
        return batch.subset(slice(0, state.batch_size))

    @hasten.hookimpl
    def hasten_log(self, state, metrics, step):
        if "cooldown/active" in metrics:
            self.logged[step] = metrics["cooldown/active"]


@pytest.fixture(autouse=True)
def sampler():
    register_plugin(Sampler)
    yield
    unregister_plugin("sampler")


def test_sampling_vetoed_in_last_steps(tiny_config, capfd):
    plugins = {"sampler": {}, "cooldown": {"fraction": 0.5}}
    result = train(tiny_config(run={"max_steps": 6, "log_every": 1}, plugins=plugins))
    sampler = result.state.scratch["sampler"]
    assert [sampler.asked[t] for t in range(6)] == [True, True, True, False, False, False]
    assert sampler.delivered == [32, 32, 32, 16, 16, 16]
    assert sampler.logged == {0: 0.0, 1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0, 5: 1.0}
    assert result.state.scratch["cooldown/start_step"] == 3
    switches = [line for line in capfd.readouterr().err.splitlines() if line.startswith("cooldown:")]
    assert switches == ["cooldown: step 3: uniform sampling (selection / hard mining off); "
                        "cool-down = steps 3..5 (3 of 6)"]


def test_alone_changes_nothing(tiny_config, tmp_path):
    """Without a sampling plugin, training is identical to a run without cool-down."""
    unregister_plugin("sampler")
    plain = train(tiny_config(run={"max_steps": 4, "run_dir": str(tmp_path / "a")}))
    cooldown = {"cooldown": {"steps": 2}}
    cooled = train(tiny_config(run={"max_steps": 4, "run_dir": str(tmp_path / "b")}, plugins=cooldown))
    assert cooled.losses == plain.losses
    assert cooled.metrics["cooldown/active"] == 1.0  # the last logged step is in the cool-down


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fraction": 0.1, "steps": 3}, r"plugins\.cooldown\.fraction \(0\.1\) and plugins\.cooldown\.steps \(3\)"),
        ({"fraction": 1.5}, r"plugins\.cooldown\.fraction"),
        ({"steps": 50}, r"plugins\.cooldown\.steps: 50 exceeds the 6 training steps"),
    ],
)
def test_bad_settings_name_the_key(tiny_config, settings, message):
    with pytest.raises(hasten.UserError, match=message):
        Trainer(tiny_config(run={"max_steps": 6}, plugins={"cooldown": settings}))
