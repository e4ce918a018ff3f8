"""The plugin in real (tiny) runs: batch sizes on the model, FLOPs, ViT, config errors."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel, ConfigDict

import hasten
from hasten.accounting import count_forward_flops
from hasten.engine import Trainer, train
from hasten.plugins import register_plugin, unregister_plugin

# 8 steps, warm-up 2, 16 -> 32 by 8 px: [32, 32, 16, 16, 24, 24, 32, 32] (see the schedule tests).
PLAN = [32, 32, 16, 16, 24, 24, 32, 32]
SETTINGS = {"min_resolution": 16, "resolution_step": 8}


class Spy(hasten.Plugin):
    """Records what reaches the model and what the engine logs, step by step."""

    name = "spy"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        stop_after: int | None = None

    def __init__(self, settings=None):
        super().__init__(settings)
        self.shapes: list[tuple[int, ...]] = []
        self.magnitudes: list[float] = []
        self.logged: dict[int, dict[str, float]] = {}

    @hasten.hookimpl
    def hasten_setup(self, state):
        state.scratch["spy"] = self

    @hasten.hookimpl
    def hasten_forward(self, state, batch):
        assert len({tuple(v.shape) for v in batch.views}) == 1  # every view at the same size
        self.shapes.append(tuple(batch.views[0].shape))
        self.magnitudes.append(state.aug_magnitude)
        return None  # the task's forward runs

    @hasten.hookimpl
    def hasten_step_end(self, state, output):
        if self.settings.stop_after == state.step + 1:
            state.should_stop = "spy"

    @hasten.hookimpl
    def hasten_log(self, state, metrics, step):
        if "flops/train" in metrics:
            self.logged[step] = dict(metrics)


@pytest.fixture
def spy():
    register_plugin(Spy)
    yield
    unregister_plugin("spy")


def per_step_flops(spy_plugin: Spy) -> list[float]:
    cumulative = [spy_plugin.logged[s]["flops/train"] for s in sorted(spy_plugin.logged)]
    return [b - a for a, b in zip([0.0, *cumulative], cumulative)]


def test_batches_reaching_the_model_follow_the_schedule(tiny_config, spy):
    config = tiny_config(plugins={"progressive": {**SETTINGS, "warmup_steps": 2}, "spy": {}})
    result = train(config)
    rec = result.state.scratch["spy"]
    assert [shape[-1] for shape in rec.shapes] == PLAN
    assert [shape[-2] for shape in rec.shapes] == PLAN
    assert [rec.logged[s]["train/resolution"] for s in range(8)] == PLAN
    # magnitude 4 -> 6 linearly over the 8 steps, as the augmentation saw it
    assert rec.magnitudes == pytest.approx([4 + 2 * t / 7 for t in range(8)])

    # FLOPs logged per step follow the resolution: 3 x forward x batch at that size.
    model = result.state.model
    forward = {r: count_forward_flops(model, torch.zeros(1, 3, r, r)) for r in (16, 24, 32)}
    flops = per_step_flops(rec)
    assert flops == pytest.approx([3 * 4 * forward[r] for r in PLAN], rel=1e-9)
    assert flops[2] < flops[4] < flops[0]  # 16 px < 24 px < 32 px steps
    assert flops[2] / flops[0] == pytest.approx(0.25, rel=0.1)  # ~ (16/32)^2


def test_warmup_defaults_to_the_lr_schedule(tiny_config, spy):
    config = tiny_config(
        schedule={"name": "warmup_cosine", "warmup_steps": 2}, plugins={"progressive": SETTINGS, "spy": {}}
    )
    result = train(config)
    assert [shape[-1] for shape in result.state.scratch["spy"].shapes] == PLAN
    assert result.state.scratch["progressive"]["warmup_steps"] == 2


def test_no_lr_warmup_means_the_ramp_starts_at_step_0(tiny_config, spy):
    # cosine has no warm-up: super mode then equals classic mode
    result = train(tiny_config(plugins={"progressive": SETTINGS, "spy": {}}))
    assert [s[-1] for s in result.state.scratch["spy"].shapes] == [16, 16, 16, 24, 24, 32, 32, 32]


def test_classic_mode_and_explicit_max(tiny_config, spy):
    config = tiny_config(
        run={"max_steps": 6},
        plugins={"progressive": {"mode": "classic", "min_resolution": 8, "max_resolution": 24,
                                 "resolution_step": 8}, "spy": {}},
    )
    result = train(config)
    assert [s[-1] for s in result.state.scratch["spy"].shapes] == [8, 8, 16, 16, 24, 24]
    assert result.state.max_resolution == 24  # evaluation runs at the schedule's r_max


def test_vit_trains_at_every_scheduled_size(tiny_config, spy):
    config = tiny_config(
        model={"name": "vit_tiny", "options": {"embed_dim": 32, "depth": 1, "num_heads": 2}},
        plugins={"progressive": {**SETTINGS, "warmup_steps": 2}, "spy": {}},
        optim={"name": "adamw", "lr": 1e-3},
    )
    result = train(config)
    assert [s[-1] for s in result.state.scratch["spy"].shapes] == PLAN
    assert all(torch.isfinite(torch.tensor(result.losses)))
    flops = per_step_flops(result.state.scratch["spy"])
    assert flops[2] < flops[4] < flops[0]


def test_ssl_views_follow_the_schedule(tiny_config, spy):
    """Both SSL views come at the scheduled size (the task augments at state.resolution)."""
    from hasten.registry import REGISTRY

    if "ssl" not in REGISTRY.tasks:
        pytest.skip("this core has no ssl task")
    config = tiny_config(
        task={"name": "ssl", "options": {"method": "simsiam", "knn_k": 4}},
        plugins={"progressive": {**SETTINGS, "warmup_steps": 2}, "spy": {}},
        run={"max_steps": 8},
    )
    result = train(config)
    spy_plugin = result.state.scratch["spy"]
    assert [shape[-1] for shape in spy_plugin.shapes] == PLAN
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_resume_continues_the_schedule(tiny_config, spy):
    """The table is indexed by state.step, so a resumed run picks the schedule up where it stopped."""
    settings = {"progressive": {**SETTINGS, "warmup_steps": 2}}
    first = train(tiny_config(run={"checkpoint_every": 100}, plugins={**settings, "spy": {"stop_after": 3}}))
    assert first.steps == 3
    resumed = train(tiny_config(run={"checkpoint_every": 100}, plugins={**settings, "spy": {}}), resume=first.run_dir)
    assert [s[-1] for s in resumed.state.scratch["spy"].shapes] == PLAN[3:]


# ------------------------------------------------------------------- errors
def build(tiny_config, **sections):
    """Configure + setup only: errors must come before the first step."""
    return Trainer(tiny_config(**sections))


def test_too_small_for_the_model_is_rejected_with_the_smallest_legal_value(tiny_config):
    # stem_stride 2 and 5 stages -> small_resnet's smallest input is 2 * 2**4 = 32 px
    deep = {"name": "small_resnet", "options": {"width": 4, "stem_stride": 2, "blocks": [1, 1, 1, 1, 1]}}
    with pytest.raises(
        hasten.UserError,
        match=r"plugins\.progressive\.min_resolution: 16 is below the smallest input SmallResNet accepts \(32\); "
        r"the smallest legal value \(a multiple of resolution_step 8\) is 32",
    ):
        build(tiny_config, data={"resolution": 64}, model=deep, plugins={"progressive": SETTINGS})
    with pytest.raises(hasten.UserError, match=r"smallest legal value \(a multiple of resolution_step 24\) is 48"):
        build(tiny_config, data={"resolution": 96}, model=deep,
              plugins={"progressive": {"min_resolution": 24, "resolution_step": 24}})
    build(tiny_config, data={"resolution": 64}, model=deep,
          plugins={"progressive": {"min_resolution": 32, "resolution_step": 8}})  # the suggested value works


def test_vit_patch_multiples(tiny_config):
    vit = {"name": "vit_tiny", "options": {"embed_dim": 32, "depth": 1, "num_heads": 2}}  # patch 4

    def with_schedule(resolution, minimum, step):
        return build(tiny_config, data={"resolution": resolution}, model=vit,
                     plugins={"progressive": {"min_resolution": minimum, "resolution_step": step}})

    with pytest.raises(hasten.UserError, match=r"progressive\.resolution_step: resolution 18 must be a multiple of 4"):
        with_schedule(36, 12, 6)
    with pytest.raises(hasten.UserError, match=r"progressive\.min_resolution: resolution 6 must be a multiple of 4"):
        with_schedule(36, 6, 6)
    with pytest.raises(hasten.UserError, match=r"min_resolution: 2 is below .*\(4\).*and of the patch size 4\) is 4"):
        with_schedule(32, 2, 2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, r"plugins\.progressive\.min_resolution: 96 is above max_resolution 32 \(max_resolution defaults to "
             r"data\.resolution 32\)"),
        ({"min_resolution": 16, "resolution_step": 0}, r"plugins\.progressive\.resolution_step"),
        ({"min_resolution": 16, "resolution_step": -8}, r"plugins\.progressive\.resolution_step"),
        ({"min_resolution": 20, "resolution_step": 8},
         r"plugins\.progressive\.min_resolution: 20 is not a multiple of resolution_step 8; nearest multiples: 16, 24"),
        ({**SETTINGS, "max_resolution": 36}, r"plugins\.progressive\.max_resolution: 36"),
        ({**SETTINGS, "warmup_steps": 7}, r"plugins\.progressive\.warmup_steps: 7 leaves 1"),
        ({**SETTINGS, "min_magnitude": 7}, r"min_magnitude 7.0 is above max_magnitude 6.0"),
        ({**SETTINGS, "mode": "fast"}, r"plugins\.progressive\.mode"),
    ],
)
def test_bad_settings_fail_before_the_first_step(tiny_config, settings, message):
    with pytest.raises(hasten.UserError, match=message):
        build(tiny_config, plugins={"progressive": settings})


def test_one_resolution_schedule_only(tiny_config):
    class Other(hasten.Plugin):
        name = "other_resolution"
        provides = ("resolution_schedule",)

    register_plugin(Other)
    try:
        with pytest.raises(hasten.UserError, match="set the resolution schedule; enable only one"):
            build(tiny_config, plugins={"progressive": SETTINGS, "other_resolution": {}})
    finally:
        unregister_plugin("other_resolution")
