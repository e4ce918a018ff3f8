"""The selection plugin in real tiny runs: batch sizes, model state, phases, FLOPs, ViT, settings."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel, ConfigDict

import hasten
from hasten.engine import Trainer, train
from hasten.plugins import register_plugin, unregister_plugin
from hasten.state import Batch


class Probe(hasten.Plugin):
    """Records what the stream delivered and what the model trained on (listed before selection)."""

    name = "probe"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.delivered: list[int] = []
        self.trained: list[int] = []
        self.loaded: list[int] = []
        self.logged: dict[int, dict[str, float]] = {}

    @hasten.hookimpl
    def hasten_setup(self, state):
        state.scratch["probe"] = self

    @hasten.hookimpl
    def hasten_select(self, state, batch):
        self.delivered.append(len(batch))
        return None  # no opinion: selection (next in config order) decides

    @hasten.hookimpl
    def hasten_forward(self, state, batch):
        self.trained.append(len(batch))
        return None

    @hasten.hookimpl
    def hasten_step_end(self, state, output):
        self.loaded.append(state.images_loaded)

    @hasten.hookimpl
    def hasten_log(self, state, metrics, step):
        self.logged.setdefault(step, {}).update(metrics)


class UniformTail(hasten.Plugin):
    """A stand-in for cool-down: vetoes non-uniform sampling from ``from_step`` on."""

    name = "uniform_tail"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        from_step: int = 6

    @hasten.hookimpl
    def hasten_sampling_active(self, state, step):
        return False if step >= self.settings.from_step else None


@pytest.fixture(scope="module", autouse=True)
def helpers():
    register_plugin(Probe)
    register_plugin(UniformTail)
    yield
    unregister_plugin("probe")
    unregister_plugin("uniform_tail")


def run(tiny_config, selection: dict | None = None, tail: int | None = None, **sections):
    plugins: dict = {"probe": {}, "selection": selection or {}}
    if tail is not None:
        plugins["uniform_tail"] = {"from_step": tail}
    result = train(tiny_config(plugins=plugins, **sections))
    return result, result.state.scratch["probe"]


def selection_of(result) -> hasten.Plugin:
    return result.state.scratch["selection"]


@pytest.fixture(scope="module")
def phased_run(module_config):
    """8 steps: warm-up 2 steps, selection on steps 2-5, vetoed from step 6 (shared by two tests)."""
    plugins = {"probe": {}, "selection": {"warmup_steps": 2}, "uniform_tail": {"from_step": 6}}
    result = train(module_config(plugins=plugins))
    return result, result.state.scratch["probe"]


def test_batch_sizes_per_phase(phased_run):
    """b_bar delivered only while active (after warm-up, before the veto); the model always sees b."""
    result, probe = phased_run
    assert probe.delivered == [16, 16, 32, 32, 32, 32, 16, 16]
    assert probe.trained == [16] * 8
    assert probe.loaded == [16, 32, 64, 96, 128, 160, 176, 192]  # nothing loaded and thrown away
    assert result.state.samples_seen == 8 * 16
    active = {step: metrics["selection/active"] for step, metrics in probe.logged.items() if "train/loss" in metrics}
    assert active == {1: 0.0, 3: 1.0, 5: 1.0, 7: 0.0}


def test_overhead_flops_and_plan(phased_run):
    result, _ = phased_run
    state = result.state
    plugin = selection_of(result)
    # Default r_hat = round(96/224 * 16) = 7, raised to small_resnet's minimum side 8.
    assert plugin.last_resolution == 8
    per_sample = state.flops.forward_per_sample(state.task.model, (3, 8, 8))
    assert per_sample > 0
    assert state.flops.overhead["selection"] == pytest.approx(4 * 32 * per_sample)
    assert result.metrics["flops/overhead/selection"] == pytest.approx(4 * 32 * per_sample)
    # Training FLOPs are those of b samples per step at full resolution.
    full = state.flops.forward_per_sample(state.task.model, (3, 16, 16))
    assert state.flops.train == pytest.approx(8 * 16 * 3 * full)
    assert plugin.hasten_plan_step(state=state, step=3, batch_size=32) == {"selection": pytest.approx(32 * per_sample)}
    assert plugin.hasten_plan_step(state=state, step=0, batch_size=16) is None


def test_candidate_and_selected_loss_quantiles(tiny_config):
    """Greedy keeps the top half, so the selected q10 is at least the candidates' median."""
    _, probe = run(tiny_config, {"strategy": "greedy"}, run={"max_steps": 4, "log_every": 1})
    for step in range(4):
        metrics = probe.logged[step]
        assert metrics["selection/active"] == 1.0
        assert metrics["selection/candidates"] == 32.0
        assert metrics["selection/selected_loss_q10"] >= metrics["selection/candidate_loss_q50"] - 1e-6
        assert metrics["selection/selected_loss_mean"] > metrics["selection/candidate_loss_mean"]
        assert (
            metrics["selection/candidate_loss_q10"]
            <= metrics["selection/candidate_loss_q50"]
            <= metrics["selection/candidate_loss_q90"]
        )


def test_uniform_strategy_is_off(tiny_config):
    result, probe = run(tiny_config, {"strategy": "uniform"}, run={"max_steps": 4})
    assert probe.delivered == [16] * 4
    assert "selection" not in result.state.flops.overhead


def test_same_seed_same_run(tiny_config, tmp_path):
    first, _ = run(tiny_config, {}, run={"max_steps": 4, "run_dir": str(tmp_path / "a")})
    second, _ = run(tiny_config, {}, run={"max_steps": 4, "run_dir": str(tmp_path / "b")})
    assert first.losses == second.losses


def candidate_batch(trainer: Trainer, size: int) -> Batch:
    state = trainer.state
    item = state.data.train.__getitems__(list(range(size)))
    batch = Batch(images=item[0], labels=torch.as_tensor(item[1]), indices=torch.arange(size)).to(state.device)
    batch.views = state.task.views(state, batch)
    return batch


@pytest.mark.parametrize("mode", ["eval", "train_restore"])
def test_selection_pass_leaves_model_state_unchanged(tiny_config, mode):
    trainer = Trainer(tiny_config(plugins={"selection": {"scoring_mode": mode}}))
    state = trainer.state
    plugin = trainer.plugins.get("selection")
    model = state.model.train()
    batch = candidate_batch(trainer, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert any("running_mean" in k for k in before)

    selected = plugin.hasten_select(state=state, batch=batch)

    assert len(selected) == 16
    assert model.training  # mode restored
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    # Control: the same low-resolution pass in train mode without the plugin's care moves the statistics.
    with torch.no_grad():
        state.task.sample_losses(model, torch.nn.functional.interpolate(batch.views[0], size=8), batch)
    moved = [k for k, v in before.items() if not torch.equal(model.state_dict()[k], v)]
    assert any("running_mean" in k for k in moved) and any("num_batches_tracked" in k for k in moved)


def test_scoring_modes_rank_differently_but_sensibly(tiny_config, tmp_path):
    """Both modes give finite per-sample losses for every candidate; they differ (batch vs running stats)."""
    losses = {}
    for mode in ("eval", "train_restore"):
        config = tiny_config(run={"run_dir": str(tmp_path / mode)}, plugins={"selection": {"scoring_mode": mode}})
        trainer = Trainer(config)
        batch = candidate_batch(trainer, 32)
        losses[mode] = trainer.plugins.get("selection").score(trainer.state, batch.views[0], batch)
        assert losses[mode].shape == (32,) and torch.isfinite(losses[mode]).all()
    assert not torch.allclose(losses["eval"], losses["train_restore"])


def test_vit_scores_at_lower_resolution(tiny_config, tmp_path):
    model = {"name": "vit_tiny", "options": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
    result, probe = run(tiny_config, {"selection_ratio": 0.5}, model=model, run={"max_steps": 3})
    plugin = selection_of(result)
    assert plugin.last_resolution == 8  # 0.5 x 16, a multiple of the patch size 4
    assert probe.delivered == [32] * 3 and probe.trained == [16] * 3
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert plugin.scoring_resolution(12) == 8  # round(0.5 * 12) = 6 -> nearest multiple of 4 is 8
    assert plugin.scoring_resolution(4) == 4  # never above the training resolution
    # The default 96/224 of 16 px (6.9) becomes a legal ViT side as well.
    trainer = Trainer(tiny_config(model=model, run={"run_dir": str(tmp_path / "second")}, plugins={"selection": {}}))
    assert trainer.plugins.get("selection").scoring_resolution(16) == 8


def test_absolute_resolution_follows_lower_training_resolution(tiny_config):
    trainer = Trainer(tiny_config(plugins={"selection": {"selection_resolution": 12}}))
    plugin = trainer.plugins.get("selection")
    assert plugin.scoring_resolution(16) == 12
    assert plugin.scoring_resolution(10) == 10


@pytest.mark.parametrize(
    ("settings", "sections", "message"),
    [
        ({"candidate_ratio": 1.5}, {}, r"plugins\.selection\.candidate_ratio = 1\.5 must be >= 1 \+ beta = 2\.0"),
        ({"beta": -1}, {}, r"plugins\.selection\.beta"),
        ({"selection_resolution": 32}, {}, r"plugins\.selection\.selection_resolution: 32 exceeds .* = 16"),
        ({"selection_resolution": 8, "selection_ratio": 0.5}, {}, r"set exactly one"),
        ({"strategy": "best"}, {}, r"plugins\.selection\.strategy"),
        (
            {"selection_resolution": 6},
            {"model": {"name": "vit_tiny", "options": {"depth": 1}}},
            r"plugins\.selection\.selection_resolution: resolution 6 must be a multiple of 4",
        ),
    ],
)
def test_bad_settings_name_the_key(tiny_config, settings, sections, message):
    with pytest.raises(hasten.UserError, match=message):
        Trainer(tiny_config(plugins={"selection": settings}, **sections))


def test_greedy_needs_no_beta_margin():
    from pydantic import ValidationError

    from hasten_selection.plugin import SelectionSettings as Settings

    assert Settings(strategy="greedy", candidate_ratio=1.5).candidate_ratio == 1.5
    assert Settings(beta=0.5, candidate_ratio=1.5).beta == 0.5
    with pytest.raises(ValidationError, match="candidate_ratio"):
        Settings(beta=0.6, candidate_ratio=1.5)
