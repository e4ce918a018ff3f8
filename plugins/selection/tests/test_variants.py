"""The scoring variants beyond the research in real tiny runs: loss memory, mixed, proxy network.

Each run is 128 procedural training images, b = 16, b_bar = 32 (so one epoch
of candidates is 4 steps), small_resnet width 4 at 16 px.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

import hasten
from hasten.checkpoint import checkpoint_path, load_checkpoint
from hasten.commands.estimate import plan
from hasten.engine import Trainer, train
from hasten.plugins import register_plugin, unregister_plugin
from hasten_selection.plugin import PROXY_TRAINING


class Recorder(hasten.Plugin):
    """Listed before selection: what each step offered, trained on, and what selection did and logged."""

    name = "recorder"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.candidates: list[list[int]] = []
        self.trained: list[list[int]] = []
        self.sample_losses: list[torch.Tensor] = []
        self.scored: list[int] = []
        self.logged: dict[int, dict[str, float]] = {}

    @hasten.hookimpl
    def hasten_setup(self, state):
        state.scratch["recorder"] = self

    @hasten.hookimpl
    def hasten_select(self, state, batch):
        self.candidates.append(batch.indices.tolist())
        return None

    @hasten.hookimpl
    def hasten_forward(self, state, batch):
        self.trained.append(batch.indices.tolist())
        return None

    @hasten.hookimpl
    def hasten_step_end(self, state, output):
        self.sample_losses.append(output.sample_losses.clone())
        self.scored.append(state.scratch["selection"].last_scored)

    @hasten.hookimpl
    def hasten_log(self, state, metrics, step):
        self.logged.setdefault(step, {}).update(metrics)


class StopAt(hasten.Plugin):
    """Ends the run gracefully after ``step`` steps (a stand-in for a killed run; the engine checkpoints)."""

    name = "stop_at"

    class Settings(BaseModel):
        step: int = 0

    @hasten.hookimpl
    def hasten_step_end(self, state, output):
        if state.step + 1 == self.settings.step:
            state.should_stop = "test stop"


@pytest.fixture(scope="module", autouse=True)
def helpers():
    register_plugin(Recorder)
    register_plugin(StopAt)
    yield
    unregister_plugin("recorder")
    unregister_plugin("stop_at")


#: 128 training images (4 steps of 32 candidates per epoch), a width-4 model: seconds per run
SMALL = {"data": {"options": {"train_size": 128, "val_size": 32}}, "model": {"options": {"width": 4}}}


def small(tiny_config, **sections):
    return tiny_config(**{**SMALL, **sections})


def run(tiny_config, selection: dict, steps: int = 8, **sections):
    result = train(small(tiny_config, plugins={"recorder": {}, "selection": selection},
                         run={"max_steps": steps, "log_every": 1}, **sections))
    return result, result.state.scratch["recorder"], result.state.scratch["selection"]


def expected_stale(recorder: Recorder, max_age: int | None) -> list[int]:
    """Per step, how many candidates had no training-forward loss at most ``max_age`` steps old."""
    last_trained: dict[int, int] = {}
    counts = []
    for step, (candidates, trained) in enumerate(zip(recorder.candidates, recorder.trained, strict=True)):
        counts.append(sum(1 for i in candidates
                          if i not in last_trained or (max_age is not None and step - last_trained[i] > max_age)))
        for i in trained:
            last_trained[i] = step
    return counts


# ------------------------------------------------------------------ memory
def test_memory_scoring_costs_no_flops_and_remembers_the_training_losses(tiny_config):
    result, recorder, plugin = run(tiny_config, {"scoring": "memory", "strategy": "greedy"})
    state = result.state
    assert state.flops.overhead == {"selection": 0.0}
    assert result.metrics["flops/overhead/selection"] == 0.0 and result.metrics["flops/overhead"] == 0.0
    assert [len(c) for c in recorder.candidates] == [32] * 8 and [len(t) for t in recorder.trained] == [16] * 8
    assert state.images_loaded == 8 * 32  # the cost it does have: twice the images loaded
    assert recorder.scored == [0] * 8
    # The memory holds each sample's loss of its LAST training forward, and that step.
    last: dict[int, tuple[int, float]] = {}
    for step, (trained, losses) in enumerate(zip(recorder.trained, recorder.sample_losses, strict=True)):
        for index, loss in zip(trained, losses.tolist(), strict=True):
            last[index] = (step, loss)
    memory = plugin.memory
    seen = (memory.step >= 0).nonzero().squeeze(1).tolist()
    assert sorted(seen) == sorted(last)
    for index, (step, loss) in last.items():
        assert int(memory.step[index]) == step and float(memory.loss[index]) == pytest.approx(loss)
    # Epoch 1 (steps 0-3): every candidate is new. Epoch 2: greedy takes the never-seen first, then the highest.
    assert recorder.logged[0]["selection/memory_seen_share"] == 0.0
    assert recorder.logged[0]["selection/scored_share"] == 0.0
    assert recorder.logged[7]["selection/memory_seen_share"] > 0.0
    seen_before = {i for trained in recorder.trained[:4] for i in trained}
    for step in range(4, 8):
        trained_new = sum(1 for i in recorder.trained[step] if i not in seen_before)
        offered_new = sum(1 for i in recorder.candidates[step] if i not in seen_before)
        assert trained_new == min(16, offered_new)
        seen_before.update(recorder.trained[step])
    candidates, selected = plugin._candidate_losses, plugin._selected_losses
    unselected = candidates[~torch.isin(candidates, selected)]
    assert selected.min() >= unselected.max()


def test_memory_scoring_plans_zero_overhead(tiny_config):
    planned = plan(small(tiny_config, plugins={"selection": {"scoring": "memory", "warmup_steps": 2}}))
    assert planned.overhead == {"selection": 0.0}


# ------------------------------------------------------------------- mixed
@pytest.mark.parametrize("max_age", [0, 2, 1000])
def test_mixed_scores_only_the_stale_candidates(tiny_config, tmp_path, max_age):
    result, recorder, _ = run(tiny_config, {"scoring": "mixed", "memory_max_age": max_age})
    expected = expected_stale(recorder, max_age)
    assert recorder.scored == expected
    if max_age == 0:
        assert expected == [32] * 8  # no memory is that fresh: the research's method
    if max_age == 1000:
        assert expected[:4] == [32] * 4 and sum(expected[4:]) < 4 * 32  # epoch 2 reuses the memory
    state = result.state
    per_sample = state.flops.forward_per_sample(state.task.model, (3, 8, 8))
    assert state.flops.overhead["selection"] == pytest.approx(sum(expected) * per_sample)
    for step, count in enumerate(expected):
        logged = recorder.logged[step]
        assert logged["selection/scored_share"] == pytest.approx(count / 32)
        assert logged["selection/memory_fresh_share"] == pytest.approx(1 - count / 32)
        assert 0.0 <= logged["selection/near_zero_share"] <= 1.0
    # hasten estimate: an upper bound (every candidate scored)
    planned = plan(small(tiny_config, plugins={"selection": {"scoring": "mixed", "memory_max_age": max_age}},
                         run={"max_steps": 8, "run_dir": str(tmp_path / "plan")}))
    assert planned.overhead["selection"] == pytest.approx(8 * 32 * per_sample)


# ------------------------------------------------------------------- proxy
def test_proxy_flops_are_counted_and_planned(tiny_config, tmp_path):
    steps, warmup = 6, 2
    settings = {"scoring": "proxy", "proxy_width": 2, "warmup_steps": warmup}
    result, recorder, plugin = run(tiny_config, settings, steps=steps)
    state = result.state
    assert all("selection/proxy_loss" in recorder.logged[s] for s in range(steps))
    assert plugin.last_resolution == 8
    per_proxy = state.flops.forward_per_sample(plugin.proxy, (3, 8, 8))
    per_model = state.flops.forward_per_sample(state.task.model, (3, 8, 8))
    assert 0 < per_proxy < per_model / 3  # width 2 vs the model's 4
    scoring = (steps - warmup) * 32 * per_proxy
    training = steps * 16 * 3 * per_proxy  # every step trains the proxy on the b trained samples (warm-up too)
    assert state.flops.overhead == {"selection": pytest.approx(scoring), PROXY_TRAINING: pytest.approx(training)}
    assert result.metrics[f"flops/overhead/{PROXY_TRAINING}"] == pytest.approx(training)
    planned = plan(small(tiny_config, plugins={"selection": settings},
                         run={"max_steps": steps, "run_dir": str(tmp_path / "plan")}))
    assert planned.overhead == {"selection": pytest.approx(scoring), PROXY_TRAINING: pytest.approx(training)}
    # The proxy's initialisation leaves the run's random streams alone: the warm-up steps equal a
    # forward-scoring run's.
    reference = train(small(tiny_config, plugins={"selection": {"warmup_steps": warmup}},
                            run={"max_steps": warmup, "run_dir": str(tmp_path / "reference")}))
    assert result.losses[:warmup] == reference.losses


def test_proxy_learns_scores_and_leaves_the_model_alone(tiny_config):
    trainer = Trainer(small(tiny_config, plugins={"selection": {"scoring": "proxy", "proxy_width": 4}}))
    state, plugin = trainer.state, trainer.plugins.get("selection")
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    proxy_before = {k: v.clone() for k, v in plugin.proxy.state_dict().items()}
    item = state.data.train.__getitems__(list(range(32)))
    batch = hasten.Batch(images=item[0], labels=torch.as_tensor(item[1]), indices=torch.arange(32))
    batch.views = state.task.views(state, batch)
    selected = plugin.hasten_select(state=state, batch=batch)
    assert len(selected) == 16
    for key, value in state.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(v, proxy_before[k]) for k, v in plugin.proxy.state_dict().items())  # it trained
    # Its own SGD fits a fixed batch: the training loss falls.
    inputs, _ = plugin._low_resolution(batch)
    losses = []
    for _ in range(15):
        plugin.train_proxy(state, inputs, batch, 8)
        losses.append(float(plugin._proxy_loss))
    assert losses[-1] < 0.5 * losses[0], losses
    trainer.close()


# ------------------------------------------------------------------ resume
def assert_identical(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize(
    "selection",
    [{"scoring": "memory"}, {"scoring": "mixed", "memory_max_age": 3}, {"scoring": "proxy", "proxy_width": 2}],
    ids=["memory", "mixed", "proxy"],
)
def test_stopped_and_resumed_equals_uninterrupted(tiny_config, tmp_path: Path, selection):
    steps, stop = 9, 6  # stopped in the second epoch of candidates, where the memory is in use
    common = {"max_steps": steps, "checkpoint_every": 3}
    whole = tmp_path / "whole"
    train(small(tiny_config, plugins={"selection": selection}, run={**common, "run_dir": str(whole)}))
    parts = tmp_path / "parts"
    first = train(small(tiny_config, plugins={"selection": selection, "stop_at": {"step": stop}},
                        run={**common, "run_dir": str(parts)}))
    assert first.steps == stop
    stopped = load_checkpoint(checkpoint_path(parts, stop))["plugins"]["selection"]
    assert set(stopped) == ({"proxy", "proxy_optimizer"} if "proxy_width" in selection else {"memory"})
    train(small(tiny_config, plugins={"selection": selection}, run={**common, "run_dir": str(parts)}),
          resume=str(parts))
    a, b = (load_checkpoint(checkpoint_path(d, steps)) for d in (whole, parts))
    for blob in (a, b):  # the run record's wall-clock time differs between any two runs
        blob["plugins"].get("record", {}).pop("elapsed", None)
    for key in ("model", "optimizer", "flops", "plugins", "step", "samples_seen", "images_loaded"):
        assert_identical(a[key], b[key], key)
    for key in ("rng", "images_loaded", "recent_losses", "plugins"):
        assert_identical(a["ranks"][0][key], b["ranks"][0][key], f"ranks/{key}")


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("settings", "sections", "message"),
    [
        ({"scoring": "mixed", "memory_max_age": -1}, {}, r"plugins\.selection\.memory_max_age"),
        ({"scoring": "mixed"}, {}, r"plugins\.selection\.memory_max_age: required with scoring 'mixed'"),
        ({"memory_max_age": 5}, {}, r"plugins\.selection\.memory_max_age: applies only to scoring 'mixed'"),
        ({"scoring": "memory", "memory_max_age": 5}, {}, r"plugins\.selection\.memory_max_age: applies only"),
        ({"scoring": "proxy"}, {}, r"plugins\.selection\.proxy_width: required with scoring 'proxy'"),
        ({"proxy_width": 4}, {}, r"plugins\.selection\.proxy_width: applies only to scoring 'proxy'"),
        ({"scoring": "memory", "proxy_lr": 0.1}, {}, r"plugins\.selection\.proxy_lr: applies only"),
        ({"scoring": "proxy", "proxy_width": 0}, {}, r"plugins\.selection\.proxy_width"),
        ({"scoring": "proxy", "proxy_width": 4, "proxy_lr": 0}, {}, r"plugins\.selection\.proxy_lr"),
        ({"scoring": "loss"}, {}, r"plugins\.selection\.scoring"),
        (
            {"scoring": "mixed", "memory_max_age": 3, "scoring_mode": "train_restore"},
            {},
            r"plugins\.selection\.scoring_mode: 'train_restore' .* use scoring_mode 'eval'",
        ),
        (
            {"scoring": "proxy", "proxy_width": 4, "selection_resolution": 4},
            {},
            r"plugins\.selection\.selection_resolution: resolution 4 is below the smallest .* \(8\)",
        ),
        (
            {"scoring": "proxy", "proxy_width": 4},
            {"data": {"dataset": "spiral", "resolution": 1, "batch_size": 8,
                      "options": {"labeled_per_class": 16, "val_per_class": 16}},
             "model": {"name": "mlp", "options": {}}},
            r"plugins\.selection\.scoring: 'proxy' .* needs image data",
        ),
    ],
)
def test_bad_variant_settings_name_the_key(tiny_config, settings, sections, message):
    with pytest.raises(hasten.UserError, match=message):
        Trainer(tiny_config(plugins={"selection": settings}, **sections))
