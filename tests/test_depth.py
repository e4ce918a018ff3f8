"""Dense depth: the dispnet model, the depth task, procedural_depth and the KITTI-raw reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from hasten.config import validate_config
from hasten.data.module import DataModule
from hasten.engine import train
from hasten.errors import UserError
from hasten.models import build_model
from hasten.registry import REGISTRY
from hasten.state import Batch


def depth_config(tmp_path: Path, **sections):
    base = {
        "run": {"name": "d", "seed": 0, "max_steps": 40, "log_every": 20, "run_dir": str(tmp_path / "run"),
                "progress": False},
        "data": {"dataset": "procedural_depth", "resolution": 32, "batch_size": 16,
                 "options": {"train_size": 128, "val_size": 32, "unlabeled_size": 16}},
        "model": {"name": "dispnet", "options": {"widths": [8, 16, 32, 64]}},
        "task": {"name": "depth"},
        "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0},
        "eval": {"batch_size": 64, "every_steps": 1000},
        "tracking": {"enabled": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return validate_config(base)


def test_dispnet_predicts_every_scale_with_the_sigmoid_depth_formula() -> None:
    model = build_model("dispnet", num_classes=0, in_channels=3, options={"widths": [8, 16, 32]})
    with torch.no_grad():
        for head in model.heads:
            head.weight.zero_()
            head.bias.fill_(0.3)
    depths = model(torch.randn(2, 3, 24, 40))
    assert [tuple(d.shape) for d in depths] == [(2, 1, 24, 40), (2, 1, 12, 20), (2, 1, 6, 10)]
    expected = 1 / (0.4 * (1 / (1 + math.exp(-0.3))) + 0.0125)
    for depth in depths:
        assert torch.allclose(depth, torch.full_like(depth, expected), atol=1e-5)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 2 * 3 + 2 * 3
    with pytest.raises(UserError, match="scales must be in"):
        build_model("dispnet", num_classes=0, in_channels=3, options={"widths": [8, 16], "scales": 3})


def test_procedural_depth_and_labeled_fraction_drop_depth_of_unlabeled_frames(tmp_path: Path) -> None:
    build = REGISTRY.datasets.get("procedural_depth")
    train_set = build(split="train", resolution=16, seed=0, train_size=40)
    images, _, extras = train_set.__getitems__([0, 5])
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 16, 16)
    depth = extras["depth"]
    assert depth.shape == (2, 1, 16, 16) and 4.0 <= float(depth.min()) and float(depth.max()) <= 40.0
    assert len(build(split="unlabeled", resolution=16, seed=0, unlabeled_size=8).__getitems__([0, 1])) == 2

    data = DataModule(depth_config(tmp_path, data={"labeled_fraction": 0.25}))
    assert len(data.train) + len(data.unlabeled) == 128
    labeled = data.train.__getitems__([0, 1, 2])
    assert labeled[2]["depth"].shape == (3, 1, 32, 32)
    unlabeled = data.unlabeled.__getitems__([0, 1])
    assert len(unlabeled) == 2 and bool((unlabeled[1] == -1).all())


def test_views_flip_image_and_depth_together(tmp_path: Path) -> None:
    config = depth_config(tmp_path, task={"name": "depth", "options": {"flip": 0.5}})
    task = REGISTRY.tasks.get("depth")(config, DataModule(config).info)
    ramp = torch.arange(32, dtype=torch.float32).expand(8, 1, 32, 32)
    images = (ramp * 8).to(torch.uint8).expand(8, 3, 32, 32).contiguous()
    batch = Batch(images=images, labels=torch.zeros(8, dtype=torch.long), indices=torch.arange(8),
                  extras={"depth": ramp + 5})
    state = type("S", (), {"resolution": 32, "generator": torch.Generator().manual_seed(1)})()
    image, depth = task.views(state, batch)
    increasing = depth[:, 0, 0, 1] > depth[:, 0, 0, 0]
    assert 0 < int(increasing.sum()) < 8  # some flipped, some not (seeded)
    # The image ramp runs the same way as its depth ramp in every sample.
    assert torch.equal(image[:, 0, 0, 1] > image[:, 0, 0, 0], increasing)


def test_loss_is_the_mean_over_scales_of_valid_pixel_log_errors(tmp_path: Path) -> None:
    config = depth_config(tmp_path)
    task = REGISTRY.tasks.get("depth")(config, DataModule(config).info)
    target = torch.full((1, 1, 4, 4), 10.0)
    target[0, 0, 0, :] = 0.0  # no measurement: ignored
    fine, coarse = torch.full((1, 1, 4, 4), 20.0), torch.full((1, 1, 2, 2), 5.0)
    loss = task._sample_losses((fine, coarse), target)
    assert float(loss) == pytest.approx(math.log(2.0), abs=1e-6)  # |log 20/10| and |log 5/10|, averaged


def test_depth_training_learns(tmp_path: Path) -> None:
    before = train(depth_config(tmp_path / "a", run={"max_steps": 1}))
    after = train(depth_config(tmp_path / "b", run={"max_steps": 30}))
    # measured: abs_rel 0.74 -> 0.49, delta1 0.05 -> 0.31 (train_size 512); asserted with a margin
    assert after.metrics["val/abs_rel"] < before.metrics["val/abs_rel"] - 0.1, (before.metrics, after.metrics)
    assert after.metrics["val/delta1"] > before.metrics["val/delta1"] + 0.1
    assert after.losses[-1] < 0.6 * after.losses[0]
    assert set(after.metrics) >= {"val/delta1", "val/abs_rel", "val/loss"}


def test_depth_task_rejects_a_classifier(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="task depth needs a dense model"):
        train(depth_config(tmp_path, model={"name": "small_resnet", "options": {"width": 8}}))


# ---- KITTI raw, on tiny synthetic files of the real format -------------------------------------------------------

def write_kitti(root: Path, drives: int = 2, frames: int = 3) -> None:
    date = root / "2011_09_26"
    date.mkdir(parents=True)
    # Velodyne (x forward, y left, z up) -> camera (x right, y down, z forward); focal 10, centre (16, 8).
    (date / "calib_velo_to_cam.txt").write_text(
        "calib_time: 15-Mar-2012 11:37:16\nR: 0 -1 0 0 0 -1 1 0 0\nT: 0 0 0\n"
    )
    (date / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.95e-02\n"
        "R_rect_00: 1 0 0 0 1 0 0 0 1\n"
        "P_rect_00: 10 0 16 0 0 10 8 0 0 0 1 0\n"
        "P_rect_02: 10 0 16 0 0 10 8 0 0 0 1 0\n"
    )
    points = np.array(
        [
            [10.0, 0.0, 0.0, 0.5],   # straight ahead: pixel (16, 8), depth 10
            [5.0, 1.0, 0.5, 0.5],    # u = -10/5 + 16 = 14, v = -5/5 + 8 = 7, depth 5
            [10.0, 2.0, 1.0, 0.5],   # the same pixel (14, 7) farther: the nearer point wins
            [-3.0, 0.0, 0.0, 0.5],   # behind: dropped
            [1.0, -5.0, 0.0, 0.5],   # u = 50 + 16: outside the 32 px wide image: dropped
        ],
        dtype=np.float32,
    )
    for d in range(drives):
        drive = date / f"2011_09_26_drive_{d + 1:04d}_sync"
        (drive / "image_02" / "data").mkdir(parents=True)
        (drive / "velodyne_points" / "data").mkdir(parents=True)
        for f in range(frames):
            image = torch.full((3, 16, 32), 40 * f + 10 * d, dtype=torch.uint8)
            write_png(image, str(drive / "image_02" / "data" / f"{f:010d}.png"))
            points.tofile(drive / "velodyne_points" / "data" / f"{f:010d}.bin")


def test_kitti_reader_projects_velodyne_points(tmp_path: Path) -> None:
    write_kitti(tmp_path / "kitti")
    build = REGISTRY.datasets.get("kitti")
    train_set = build(split="train", resolution=32, seed=0, path=str(tmp_path / "kitti"))
    val_set = build(split="val", resolution=32, seed=0, path=str(tmp_path / "kitti"))
    assert (len(train_set), len(val_set)) == (3, 3)  # the last drive is val
    images, labels, extras = train_set.__getitems__([0, 2])
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8 and labels.tolist() == [0, 0]
    assert int(images[1, 0, 0, 0]) == 80
    depth = extras["depth"][0, 0]
    # The 16 x 32 image plane is stretched to 32 x 32: rows scale by 2.
    assert float(depth[16, 16]) == pytest.approx(10.0)
    assert float(depth[14, 14]) == pytest.approx(5.0)
    assert int((depth > 0).sum()) == 2
    assert torch.equal(train_set.targets, torch.zeros(3, dtype=torch.int64))
    only_first = build(split="val", resolution=8, seed=0, path=str(tmp_path / "kitti"),
                       val_drives=["2011_09_26_drive_0001_sync"])
    assert len(only_first) == 3 and int(only_first.__getitems__([1])[0][0, 0, 0, 0]) == 40


def test_kitti_errors_name_the_problem(tmp_path: Path) -> None:
    build = REGISTRY.datasets.get("kitti")
    with pytest.raises(UserError, match=r"needs data\.path"):
        build(split="train", resolution=32, seed=0, path=None)
    write_kitti(tmp_path / "k", drives=1, frames=2)
    with pytest.raises(UserError, match="val_drives \\['nope'\\] not found"):
        build(split="val", resolution=32, seed=0, path=str(tmp_path / "k"), val_drives=["nope"])
    with pytest.raises(UserError, match="no separate unlabeled split"):
        build(split="unlabeled", resolution=32, seed=0, path=str(tmp_path / "k"))
