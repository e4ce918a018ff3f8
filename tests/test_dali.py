"""The DALI back-end (data.loader: dali) against the torch back-end, on CPU pipelines.

Skipped, with the reason shown, when NVIDIA DALI is not installed (`tox -e dali` installs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hasten
from hasten.config import validate_config
from hasten.data.augment import AugmentPolicy, ViewSpec
from hasten.data.dali import DaliLoader, dali_device, require_dali
from hasten.data.module import DataModule
from hasten.data.stream import StepBatchSampler
from hasten.engine import Trainer, train
from hasten.plugins import register_plugin, unregister_plugin

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install hasten[dali]; tox -e dali)")

REPO = Path(__file__).resolve().parents[1]
CLASSES, PER_CLASS = 3, 8  # 24 training images


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageFolder tree of smooth 20x24 JPEGs (train and val), written with torchvision."""
    from torchvision.io import encode_jpeg

    root = tmp_path_factory.mktemp("jpegs")
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", PER_CLASS), ("val", 2)):
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            coarse = torch.rand(count, 3, 4, 5, generator=generator) * 200 + 20
            images = F.interpolate(coarse, size=(20, 24), mode="bilinear", align_corners=False)
            for i, image in enumerate(images.round().to(torch.uint8)):
                (folder / f"{i}.jpg").write_bytes(encode_jpeg(image, quality=95).numpy().tobytes())
    return root


def folder_config(tmp_path: Path, root: Path, **data: object) -> hasten.Config:
    return validate_config({
        "run": {"name": "d", "seed": 0, "max_steps": 3, "log_every": 1, "run_dir": str(tmp_path / "run"),
                "progress": False},
        "data": {"dataset": "imagefolder", "path": str(root), "resolution": 16, "batch_size": 8, **data},
        "model": {"name": "small_resnet", "options": {"width": 8}},
        "eval": {"batch_size": 8},
        "tracking": {"enabled": False},
    })


def take(stream, steps: int) -> list[hasten.Batch]:
    return [next(stream) for _ in range(steps)]


def test_imagefolder_matches_torch_backend(tmp_path: Path, jpeg_tree: Path) -> None:
    """Same indices, labels, shapes and dtypes as the torch back-end; images within a few grey levels."""
    torch_data = DataModule(folder_config(tmp_path, jpeg_tree, loader="torch"))
    trainer = Trainer(folder_config(tmp_path, jpeg_tree, loader="dali"))
    dali_data = trainer.state.data
    per_epoch = len(dali_data.train) // 8
    reference = take(torch_data.train_stream(lambda s: 8, start_step=0, start_position=0, pin_memory=False),
                     2 * per_epoch)
    ours = take(dali_data.train_stream(lambda s: 8, start_step=0, start_position=0, pin_memory=False,
                                       loader_views=trainer.loader_views()), 2 * per_epoch)
    targets = dali_data.train.targets
    for theirs, mine in zip(reference, ours, strict=True):
        assert torch.equal(mine.indices, theirs.indices)
        assert torch.equal(mine.labels, theirs.labels) and torch.equal(mine.labels, targets[mine.indices])
        assert mine.images.shape == theirs.images.shape == (8, 3, 16, 16) and mine.images.dtype == torch.uint8
        difference = (mine.images.float() - theirs.images.float()).abs().mean().item()
        shuffled = (mine.images.float() - theirs.images.roll(1, 0).float()).abs().mean().item()
        assert difference < 4.0 < shuffled  # the same pictures, in the same order as their labels
        assert len(mine.views) == 1
        assert mine.views[0].shape == (8, 3, 16, 16) and mine.views[0].dtype == torch.float32
        assert abs(mine.views[0].mean().item()) < 1.5 and 0.2 < mine.views[0].std().item() < 2.0  # normalised
    for epoch in range(2):  # every sample exactly once per epoch
        seen = torch.cat([b.indices for b in ours[epoch * per_epoch : (epoch + 1) * per_epoch]])
        assert sorted(seen.tolist()) == list(range(len(dali_data.train)))


def test_shards_disjoint_across_two_ranks(tmp_path: Path, jpeg_tree: Path) -> None:
    config = folder_config(tmp_path, jpeg_tree, loader="dali")
    shares = []
    for rank in (0, 1):
        data = DataModule(config, rank=rank, world_size=2)  # per-rank batch 4, 12 samples per rank and epoch
        batches = take(data.train_stream(lambda s: 4, start_step=0, start_position=0, pin_memory=False), 3)
        torch_batches = take(DataModule(folder_config(tmp_path, jpeg_tree), rank=rank, world_size=2).train_stream(
            lambda s: 4, start_step=0, start_position=0, pin_memory=False), 3)
        assert [b.indices.tolist() for b in batches] == [b.indices.tolist() for b in torch_batches]
        shares.append(set(torch.cat([b.indices for b in batches]).tolist()))
    assert len(shares[0]) == len(shares[1]) == 12
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(range(24))


def test_candidate_batch_sizes_and_resume(tmp_path: Path, jpeg_tree: Path) -> None:
    """Batch sizes asked per step are honoured exactly (also above the pipeline's batch); a stream restarted
    at a saved position continues with the same indices and the same augmentation."""
    sizes = {0: 8, 1: 5, 2: 20, 3: 8, 4: 3}
    trainer = Trainer(folder_config(tmp_path, jpeg_tree, loader="dali"))
    data = trainer.state.data
    views = trainer.loader_views()
    full = take(data.train_stream(sizes.__getitem__, start_step=0, start_position=0, pin_memory=False,
                                  loader_views=views), 5)
    assert [len(b) for b in full] == [8, 5, 20, 8, 3]
    assert [b.views[0].shape[0] for b in full] == [8, 5, 20, 8, 3]
    resumed = take(data.train_stream(sizes.__getitem__, start_step=3, start_position=33, pin_memory=False,
                                     loader_views=views), 2)
    for a, b in zip(full[3:], resumed, strict=True):
        assert torch.equal(a.indices, b.indices)
        assert torch.equal(a.views[0], b.views[0])  # parameters drawn from (seed, rank, step): exact resume


class ScheduleProbe(hasten.Plugin):
    """Changes resolution and magnitude every step; records what the step trained on."""

    name = "dali_probe"
    resolutions = (16, 8, 12, 16)

    @hasten.hookimpl
    def hasten_step_start(self, state: hasten.State) -> None:
        state.resolution = self.resolutions[state.step % len(self.resolutions)]
        state.aug_magnitude = float(state.step)

    @hasten.hookimpl
    def hasten_select(self, state: hasten.State, batch: hasten.Batch) -> None:
        state.scratch.setdefault("dali_probe", []).append(tuple(batch.views[0].shape))


@pytest.fixture
def probe():
    register_plugin(ScheduleProbe)
    yield
    unregister_plugin("dali_probe")


def test_engine_resolution_per_step(tmp_path: Path, jpeg_tree: Path, probe: None) -> None:
    """The resolution set in hasten_step_start is the one of that step's DALI views; the torch augmentation
    never ran (the run's generator is untouched)."""
    config = folder_config(tmp_path, jpeg_tree, loader="dali").model_copy(update={"plugins": {"dali_probe": {}}})
    result = train(config.model_copy(update={"run": config.run.model_copy(update={"max_steps": 4})}))
    shapes = result.state.scratch["dali_probe"]
    assert [s[-1] for s in shapes] == [16, 8, 12, 16]
    fresh = torch.Generator().manual_seed(0)
    assert torch.equal(result.state.generator.get_state(), fresh.get_state())
    assert all(x == x for x in result.losses)


def test_magnitude_changes_colour_jitter(tmp_path: Path, jpeg_tree: Path) -> None:
    """No crop, no flip, jitter on every sample: deviation from the plain resize grows with the magnitude."""
    data = DataModule(folder_config(tmp_path, jpeg_tree, loader="dali"))
    policy = AugmentPolicy(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=0.0, color_jitter=1.0)
    params = {"magnitude": 0.0}
    loader = DaliLoader(
        data.train, step_params=lambda: (16, params["magnitude"]),
        views=ViewSpec(policy, 1, data.info.mean, data.info.std),
    )
    indices = list(range(16))
    plain = loader.batch(indices, step=0).views[0]
    deviations = []
    for magnitude in (0.0, 1.0, 5.0, 15.0):
        params["magnitude"] = magnitude
        deviations.append((loader.batch(indices, step=0).views[0] - plain).abs().mean().item())
    assert deviations[0] < 1e-4
    assert deviations[1] < deviations[2] < deviations[3]
    assert deviations[1] > 0.01


def test_ssl_two_views_and_in_memory_arrays(tiny_config) -> None:
    """Procedural (in-memory) data, SSL: two differently augmented views per image, images untouched."""
    trainer = Trainer(tiny_config(data={"loader": "dali"}, task={"name": "ssl", "options": {"method": "simsiam"}}))
    data = trainer.state.data
    batch = next(data.train_stream(lambda s: 16, start_step=0, start_position=0, pin_memory=False,
                                   loader_views=trainer.loader_views()))
    first, second = batch.views
    assert first.shape == second.shape == (16, 3, 16, 16)
    assert (first - second).abs().mean().item() > 0.1  # independent parameters per view
    assert torch.equal(batch.images, data.train.__getitems__(batch.indices.tolist())[0])


def test_plugin_views_take_over(tiny_config) -> None:
    """A plugin implementing hasten_views (as Hard Augment does) gets images only; DALI makes no views."""

    class OwnViews(hasten.Plugin):
        name = "own_views"

        @hasten.hookimpl
        def hasten_views(self, state: hasten.State, batch: hasten.Batch) -> None:
            return None

    register_plugin(OwnViews)
    try:
        trainer = Trainer(tiny_config(data={"loader": "dali"}, plugins={"own_views": {}}))
        assert trainer.state.task.loader_views() is not None  # the task would let DALI make its view
        assert trainer.loader_views() is None  # but the engine sees a plugin building its own
        batch = next(trainer.state.data.train_stream(lambda s: 16, start_step=0, start_position=0, pin_memory=False,
                                                     loader_views=trainer.loader_views()))
        assert batch.views == [] and batch.images.shape == (16, 3, 16, 16)
    finally:
        unregister_plugin("own_views")


def test_unreadable_file_is_named(tmp_path: Path, jpeg_tree: Path) -> None:
    import shutil

    root = tmp_path / "tree"
    shutil.copytree(jpeg_tree, root)
    bad = root / "train" / "class1" / "3.jpg"
    bad.write_bytes(b"not a jpeg at all")
    data = DataModule(folder_config(tmp_path, root, loader="dali"))
    stream = data.train_stream(lambda s: 24, start_step=0, start_position=0, pin_memory=False)
    with pytest.raises(hasten.DataError, match=r"cannot read image .*class1/3\.jpg"):
        next(stream)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_gpu_without_cuda_names_the_setting(tiny_config) -> None:
    with pytest.raises(hasten.UserError, match=r"data\.dali_device: 'gpu' needs CUDA"):
        train(tiny_config(data={"loader": "dali", "dali_device": "gpu"}))
    assert dali_device("auto", torch.device("cpu")) == "cpu"


def test_missing_dali_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # what `import` sees when the package is absent
    with pytest.raises(hasten.UserError, match=r"pip install hasten\[dali\]"):
        require_dali()


def test_quickstart_runs_with_dali(tmp_path: Path) -> None:
    """examples/quickstart.yaml with --set data.loader=dali, shortened to 3 steps of 32 images."""
    from hasten.cli import main

    overrides = ["data.loader=dali", "run.max_steps=3", "run.log_every=3", "data.batch_size=32", "eval.batch_size=32",
                 "eval.max_batches=1", "data.options.train_size=256", "data.options.val_size=32",
                 f"run.run_dir={tmp_path / 'run'}",
                 "run.progress=false", "tracking.enabled=false"]
    args = ["train", str(REPO / "examples" / "quickstart.yaml")]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0


def test_step_batch_sampler_is_the_order(tmp_path: Path, jpeg_tree: Path) -> None:
    """The DALI stream is driven by the core sampler: its indices are the sampler's, batch for batch."""
    data = DataModule(folder_config(tmp_path, jpeg_tree, loader="dali"))
    sampler = StepBatchSampler(len(data.train), lambda s: 6, seed=0)
    expected = [next(it) for it in [iter(sampler)] for _ in range(5)]
    got = take(data.train_stream(lambda s: 6, start_step=0, start_position=0, pin_memory=False), 5)
    assert [b.indices.tolist() for b in got] == expected
