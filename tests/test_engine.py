"""The engine organises training without changing it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

import hasten
from hasten.data.augment import AugmentPolicy, augment_batch
from hasten.data.module import DataModule
from hasten.data.stream import epoch_permutation
from hasten.engine import train
from hasten.models import build_model
from hasten.plugins import register_plugin, unregister_plugin


def test_parity_with_hand_written_loop(tiny_config):
    """50 steps: the engine's losses equal a plain PyTorch loop's to 5 decimals."""
    steps = 50
    config = tiny_config(run={"max_steps": steps, "log_every": 10}, eval={"every_steps": 1000})
    result = train(config)

    data = DataModule(config)
    dataset, info = data.train, data.info
    torch.manual_seed(0)
    model = build_model("small_resnet", num_classes=info.num_classes, in_channels=3, options={"width": 8})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    order = torch.cat([epoch_permutation(len(dataset), 0, e) for e in range(4)])
    losses = []
    for step in range(steps):
        indices = order[step * 16 : (step + 1) * 16].tolist()
        images, labels = dataset.__getitems__(indices)[:2]
        x = augment_batch(images, 16, 5.0, AugmentPolicy(), generator, info.mean, info.std)
        lr = 0.5 * 0.05 * (math.cos(math.pi * step / steps) + 1)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())

    assert len(result.losses) == steps
    for ours, theirs in zip(result.losses, losses, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-5)


def test_channels_last_trains_the_same_run_on_the_cpu(tiny_config, tmp_path):
    """run.channels_last changes the layout, not the math: on the CPU too, the trained model's conv
    weights are channels-last and the first steps' losses equal the contiguous run's up to float rounding."""
    steps = {"max_steps": 20, "log_every": 5}
    contiguous = train(tiny_config(run=steps, eval={"every_steps": 1000}))
    channels_last = train(tiny_config(run={**steps, "channels_last": True, "run_dir": str(tmp_path / "cl")},
                                      eval={"every_steps": 1000}))
    convs = [m.weight for m in channels_last.state.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                         for w in convs if w.shape[-1] > 1)
    assert len(channels_last.losses) == len(contiguous.losses) == 20
    # the first steps agree to float rounding (seen: 1e-7); later, training amplifies the rounding chaotically
    # (seen: up to 1e-2 by step 18, as between thread counts), so only closeness is asked of them
    for ours, theirs in zip(channels_last.losses[:5], contiguous.losses[:5], strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)
    for ours, theirs in zip(channels_last.losses, contiguous.losses, strict=True):
        assert ours == pytest.approx(theirs, rel=0.05)
    assert channels_last.metrics["val/acc1"] == pytest.approx(contiguous.metrics["val/acc1"], abs=0.05)


def test_same_seed_gives_identical_metrics(tiny_config, tmp_path):
    first = train(tiny_config(run={"max_steps": 8}))
    second = train(tiny_config(run={"max_steps": 8, "run_dir": str(tmp_path / "second")}))
    assert first.losses == second.losses
    assert first.metrics["val/acc1"] == second.metrics["val/acc1"]
    assert first.metrics["val/loss"] == second.metrics["val/loss"]


def test_different_seed_differs(tiny_config, tmp_path):
    first = train(tiny_config(run={"max_steps": 4, "seed": 0}))
    second = train(tiny_config(run={"max_steps": 4, "seed": 1, "run_dir": str(tmp_path / "seed1")}))
    assert first.losses != second.losses


class Recorder(hasten.Plugin):
    """Records hook calls; a plugin registered in code (no entry point)."""

    name = "recorder"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        lr_scale: float = Field(1.0, gt=0)

    def __init__(self, settings):
        super().__init__(settings)
        self.calls: list[str] = []
        self.batch_steps: list[int] = []
        self.lrs: list[float] = []

    @hasten.hookimpl
    def hasten_setup(self, state):
        self.calls.append("setup")
        state.scratch["recorder"] = self

    @hasten.hookimpl
    def hasten_fit_start(self, state):
        self.calls.append("fit_start")

    @hasten.hookimpl
    def hasten_step_start(self, state):
        state.lr *= self.settings.lr_scale  # runs after the built-in schedule
        self.calls.append("step_start")

    @hasten.hookimpl
    def hasten_batch_size(self, state, step):
        self.batch_steps.append(step)
        return None  # no opinion: the default answers

    @hasten.hookimpl
    def hasten_forward(self, state, batch):
        self.calls.append("forward")
        return None

    @hasten.hookimpl
    def hasten_step_end(self, state, output):
        self.lrs.append(state.optimizer.param_groups[0]["lr"])
        self.calls.append("step_end")

    @hasten.hookimpl
    def hasten_evaluate(self, state):
        return {"recorder/evaluations": 1.0}

    @hasten.hookimpl
    def hasten_fit_end(self, state):
        self.calls.append("fit_end")


@pytest.fixture
def recorder():
    register_plugin(Recorder)
    yield
    unregister_plugin("recorder")


def test_hook_order_and_settings(tiny_config, recorder):
    config = tiny_config(run={"max_steps": 3}, schedule={"name": "constant"}, plugins={"recorder": {"lr_scale": 0.5}})
    result = train(config)
    rec = result.state.scratch["recorder"]
    assert rec.calls[:2] == ["setup", "fit_start"]
    assert rec.calls[2:-1] == ["step_start", "forward", "step_end"] * 3
    assert rec.calls[-1] == "fit_end"
    assert rec.lrs == [pytest.approx(0.025)] * 3
    assert rec.batch_steps[:3] == [0, 1, 2]
    assert result.metrics["recorder/evaluations"] == 1.0


def test_plugin_settings_are_validated(tiny_config, recorder):
    with pytest.raises(hasten.UserError, match=r"plugins\.recorder\.lr_scale"):
        train(tiny_config(plugins={"recorder": {"lr_scale": -1}}))
    with pytest.raises(hasten.UserError, match=r"plugins\.recorder\.typo"):
        train(tiny_config(plugins={"recorder": {"typo": 1}}))


def test_conflicts_and_requirements(tiny_config):
    class A(hasten.Plugin):
        name = "a_sched"
        provides = ("lr_schedule",)

    class B(hasten.Plugin):
        name = "b_sched"
        provides = ("lr_schedule",)

    class C(hasten.Plugin):
        name = "needs_a"
        requires = ("a_sched",)

    for cls in (A, B, C):
        register_plugin(cls)
    try:
        with pytest.raises(hasten.UserError, match="both 'a_sched' and 'b_sched'"):
            train(tiny_config(plugins={"a_sched": {}, "b_sched": {}}))
        with pytest.raises(hasten.UserError, match="requires plugin 'a_sched'"):
            train(tiny_config(plugins={"needs_a": {}}))
        with pytest.raises(hasten.UserError, match="schedule: conflicts with plugin 'a_sched'"):
            train(tiny_config(plugins={"a_sched": {}}, schedule={"name": "cosine"}))
    finally:
        for cls in (A, B, C):
            unregister_plugin(cls.name)


def test_non_finite_loss_stops_with_step(tiny_config):
    class Explode(hasten.Plugin):
        name = "explode"

        @hasten.hookimpl
        def hasten_forward(self, state, batch):
            out = state.task.forward(state, batch, state.model)
            if state.step == 3:
                out.loss = out.loss * float("nan")
            return out

    register_plugin(Explode)
    try:
        with pytest.raises(hasten.TrainingStopped, match="non-finite loss at step 3") as info:
            train(tiny_config(run={"max_steps": 8, "log_every": 5}, plugins={"explode": {}}))
        assert info.value.step == 3
    finally:
        unregister_plugin("explode")


def test_epochs_convert_to_steps(tiny_config):
    result = train(tiny_config(run={"max_steps": None, "epochs": 0.5}))
    assert result.steps == 8  # 256 samples / 16 per batch = 16 steps per epoch
