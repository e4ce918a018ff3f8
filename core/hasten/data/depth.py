"""Depth datasets: the embedded procedural scenes with depth, and a KITTI-raw reader.

Both follow the dataset contract with a third element in the batched fetch:
``__getitems__`` returns ``(images, labels, {"depth": (N, 1, R, R) float32})``
(metres, 0 = no measurement); the stream passes it through as ``batch.extras``.
Labels are scene classes (procedural) or 0 (KITTI), so ``data.labeled_fraction``
splits the frames: an unlabeled frame keeps its image and loses its depth map.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file

from hasten.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDataset,
    TensorImageDataset,
    check_split,
)
from hasten.data.procedural import CLASS_NAMES, NUM_CLASSES, STREAMS, render_scenes
from hasten.errors import DataError, UserError
from hasten.registry import REGISTRY, Options


class DepthTensorDataset(TensorImageDataset):
    """In-memory images, labels and depth maps (``depth`` None: images only, e.g. an unlabeled split)."""

    def __init__(self, images: Tensor, labels: Tensor, depth: Tensor | None, **kwargs: Any) -> None:
        super().__init__(images, labels, **kwargs)
        if depth is not None and depth.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {depth.shape[0]} depth maps")
        self.depth = depth

    def __getitems__(self, indices: Sequence[int]) -> tuple[Any, ...]:  # type: ignore[override]
        rows = torch.as_tensor(indices, dtype=torch.int64)
        if self.depth is None:
            return self.images[rows], self.labels[rows]
        return self.images[rows], self.labels[rows], {"depth": self.depth[rows]}


class ProceduralDepthOptions(Options):
    """``data.options`` of ``data.dataset: procedural_depth``."""

    train_size: int = Field(2000, ge=1, description="training images (with depth)")
    val_size: int = Field(500, ge=1, description="validation images (with depth)")
    unlabeled_size: int = Field(2000, ge=1, description="images of the unlabeled split (no depth)")
    difficulty: float = Field(1.0, ge=0, description="clutter and jitter of the scenes (0 = clean)")
    depth_scale: float = Field(
        4.0, gt=0, description="render depths of 1-10 m are multiplied by this (4: 4-40 m, inside dispnet's range)"
    )


@REGISTRY.datasets.register("procedural_depth", options=ProceduralDepthOptions)
def build_procedural_depth(
    *, split: str, resolution: int, seed: int, path: str | None = None, options: ProceduralDepthOptions
) -> DepthTensorDataset:
    """The procedural scenes with per-pixel depth: a tilted background plane and the object as a plate.

    The unlabeled split has images only.
    """
    check_split("procedural_depth", split)
    sizes = {"train": options.train_size, "val": options.val_size, "unlabeled": options.unlabeled_size}
    numbers = {"difficulty": options.difficulty, "depth_scale": options.depth_scale}
    if not isinstance(resolution, int) or resolution < 1:
        raise UserError(f"dataset 'procedural_depth': resolution must be a positive integer, got {resolution!r}")
    images, labels, depth = render_scenes(
        sizes[split], resolution, seed, True, stream=STREAMS[split], difficulty=numbers["difficulty"]
    )
    keep_depth = None if split == "unlabeled" else depth * numbers["depth_scale"]
    if split == "unlabeled":
        labels = torch.full_like(labels, -1)
    dataset = DepthTensorDataset(
        images, labels, keep_depth, num_classes=NUM_CLASSES, mean=(0.5, 0.5, 0.5), std=(0.3, 0.3, 0.3)
    )
    dataset.class_names = CLASS_NAMES  # type: ignore[attr-defined]
    return dataset


# ---- KITTI raw -----------------------------------------------------------------

_KITTI_LAYOUT = (
    "the KITTI raw layout <path>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt and "
    "<path>/<date>/<drive>/image_02/data/*.png, velodyne_points/data/*.bin"
)


def read_calibration(path: Path) -> dict[str, np.ndarray]:
    """A KITTI calibration file: ``KEY: numbers`` per line (non-numeric lines such as calib_time are skipped)."""
    values: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            continue
    return values


def velodyne_to_image(
    cam_to_cam: dict[str, np.ndarray], velo_to_cam: dict[str, np.ndarray], camera: int = 2
) -> np.ndarray:
    """The 3x4 projection of homogeneous Velodyne points to camera ``camera``'s rectified image:
    ``P_rect_0c @ R_rect_00 @ [R | T]`` (the convention of the KITTI devkit and SfMLearner/Monodepth)."""
    try:
        velo = np.eye(4)
        velo[:3, :3] = velo_to_cam["R"].reshape(3, 3)
        velo[:3, 3] = velo_to_cam["T"].reshape(3)
        rect = np.eye(4)
        rect[:3, :3] = cam_to_cam["R_rect_00"].reshape(3, 3)
        projection = cam_to_cam[f"P_rect_0{camera}"].reshape(3, 4)
    except (KeyError, ValueError) as error:
        raise DataError(f"KITTI calibration incomplete or malformed: {error}") from None
    return projection @ rect @ velo


def project_velodyne(
    points: np.ndarray, projection: np.ndarray, image_size: tuple[int, int], resolution: tuple[int, int]
) -> np.ndarray:
    """Sparse depth map (float32 ``resolution`` = (rows, cols)) of Velodyne ``points`` (N, 4: x, y, z, reflectance).

    Depth is the Velodyne x (forward) distance, as SfMLearner/Monodepth evaluate.
    Points behind the sensor or outside the image are dropped; the image plane of
    ``image_size`` (height, width) is scaled to ``resolution``; pixel (r, c) covers
    [c, c+1) x [r, r+1) in scaled coordinates; where points collide the nearest wins.
    """
    ahead = points[points[:, 0] >= 0]
    homogeneous = np.concatenate([ahead[:, :3], np.ones((len(ahead), 1))], axis=1)
    projected = homogeneous @ projection.T
    in_front = projected[:, 2] > 0
    projected, depth = projected[in_front], ahead[in_front, 0]
    height, width = image_size
    rows_out, cols_out = resolution
    cols = np.floor(projected[:, 0] / projected[:, 2] * cols_out / width).astype(np.int64)
    rows = np.floor(projected[:, 1] / projected[:, 2] * rows_out / height).astype(np.int64)
    inside = (cols >= 0) & (cols < cols_out) & (rows >= 0) & (rows < rows_out)
    flat = np.full(rows_out * cols_out, np.inf)
    np.minimum.at(flat, rows[inside] * cols_out + cols[inside], depth[inside])
    flat[np.isinf(flat)] = 0.0
    return flat.reshape(rows_out, cols_out).astype(np.float32)


class KittiRawDataset(ImageDataset):
    """Frames of KITTI raw drives: the left colour camera (image_02) and projected Velodyne depth.

    Images are resized (bilinear, antialiased; aspect not kept: hasten's
    contract is square) to ``resolution``; the depth map is projected directly
    at that size. Decoded per item; all labels are 0 (one class).
    """

    def __init__(self, frames: Sequence[tuple[Path, Path, Path]], resolution: int) -> None:
        self.frames = list(frames)
        self.source_resolution = resolution
        self.channels = 3
        self.num_classes = 1
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self._projections: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def _projection(self, date_dir: Path) -> np.ndarray:
        if date_dir not in self._projections:
            cam, velo = date_dir / "calib_cam_to_cam.txt", date_dir / "calib_velo_to_cam.txt"
            for file in (cam, velo):
                if not file.is_file():
                    raise DataError(f"dataset 'kitti': missing {file}; expected {_KITTI_LAYOUT}")
            self._projections[date_dir] = velodyne_to_image(read_calibration(cam), read_calibration(velo))
        return self._projections[date_dir]

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """uint8 (3, R, R) image and float32 (1, R, R) depth of frame ``index``."""
        image_file, velo_file, date_dir = self.frames[index]
        try:
            image = decode_image(read_file(str(image_file)), mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise DataError(f"dataset 'kitti': cannot decode {image_file}: {error}") from None
        raw = np.fromfile(velo_file, dtype=np.float32)
        if raw.size % 4:
            raise DataError(f"dataset 'kitti': {velo_file} is not a float32 (N, 4) Velodyne scan")
        size = self.source_resolution
        depth = project_velodyne(raw.reshape(-1, 4), self._projection(date_dir), tuple(image.shape[-2:]), (size, size))
        resized = F.interpolate(
            image[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        return resized[0].round().clamp(0, 255).to(torch.uint8), torch.from_numpy(depth)[None]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.load(index)[0], 0

    def __getitems__(self, indices: Sequence[int]) -> tuple[Any, ...]:  # type: ignore[override]
        loaded = [self.load(int(i)) for i in indices]  # one decode + projection per frame (I/O, not the step)
        images = torch.stack([image for image, _ in loaded])
        depth = torch.stack([d for _, d in loaded])
        return images, torch.zeros(len(loaded), dtype=torch.int64), {"depth": depth}

    @property
    def targets(self) -> Tensor:
        return torch.zeros(len(self), dtype=torch.int64)


_FRAME = re.compile(r"^\d+$")


def kitti_frames(root: Path) -> dict[str, list[tuple[Path, Path, Path]]]:
    """Drive name -> sorted (image, velodyne scan, date folder) triples with both files present."""
    drives: dict[str, list[tuple[Path, Path, Path]]] = {}
    for date_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for drive in sorted(p for p in date_dir.iterdir() if p.is_dir()):
            image_dir, velo_dir = drive / "image_02" / "data", drive / "velodyne_points" / "data"
            if not (image_dir.is_dir() and velo_dir.is_dir()):
                continue
            frames = []
            for image in sorted(image_dir.glob("*.png")):
                scan = velo_dir / f"{image.stem}.bin"
                if _FRAME.match(image.stem) and scan.is_file():
                    frames.append((image, scan, date_dir))
            if frames:
                drives[drive.name] = frames
    return drives


class KittiOptions(Options):
    """``data.options`` of ``data.dataset: kitti``."""

    val_drives: list[str] | None = Field(
        None, description="drive folders of the val split; default: the last drive, or every 10th frame of one"
    )


@REGISTRY.datasets.register("kitti", options=KittiOptions)
def build_kitti(
    *, split: str, resolution: int, seed: int, path: str | None, options: KittiOptions
) -> KittiRawDataset:
    """KITTI raw with projected Velodyne depth. Splits: train, val (use data.labeled_fraction for unlabeled
    frames)."""
    check_split("kitti", split)
    if split == "unlabeled":
        raise UserError(
            "dataset 'kitti': no separate unlabeled split; use data.labeled_fraction to drop the depth of some frames"
        )
    if not path:
        raise UserError(f"dataset 'kitti' needs data.path: {_KITTI_LAYOUT}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset 'kitti': {root} does not exist; expected {_KITTI_LAYOUT}")
    if not isinstance(resolution, int) or resolution < 1:
        raise UserError(f"dataset 'kitti': resolution must be a positive integer, got {resolution!r}")
    drives = kitti_frames(root)
    if not drives:
        raise DataError(f"dataset 'kitti': no frames under {root}; expected {_KITTI_LAYOUT}")
    val_drives = options.val_drives
    if val_drives is not None:
        unknown = sorted(set(val_drives) - set(drives))
        if unknown:
            raise UserError(f"dataset 'kitti': val_drives {unknown} not found; drives: {', '.join(drives)}")
        chosen = [f for d, fs in drives.items() if (d in val_drives) == (split == "val") for f in fs]
    elif len(drives) > 1:
        last = list(drives)[-1]
        chosen = [f for d, fs in drives.items() if (d == last) == (split == "val") for f in fs]
    else:
        frames = next(iter(drives.values()))
        chosen = [f for i, f in enumerate(frames) if (i % 10 == 0) == (split == "val")]
    if not chosen:
        raise UserError(f"dataset 'kitti': the {split} split of {root} is empty; set option val_drives")
    return KittiRawDataset(chosen, resolution)
