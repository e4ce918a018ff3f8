"""Readers of the data formats users have: ImageFolder trees, CIFAR-10 python
batches, MNIST-style IDX files and .npz arrays. Each is registered in
``REGISTRY.datasets`` with its options model and the factory signature
``factory(*, split, resolution, seed, path, options) -> ImageDataset``.
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file

from hasten.batch import is_image_batch
from hasten.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDataset,
    TensorImageDataset,
    channel_stats,
    check_split,
    resize_square_uint8,
)
from hasten.errors import DataError, UserError
from hasten.registry import REGISTRY, Options

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _require_path(dataset: str, path: str | None, layout: str) -> Path:
    if not path:
        raise UserError(f"dataset {dataset!r} needs data.path: {layout}")
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"dataset {dataset!r}: {root} does not exist; expected {layout}")
    return root


def _resolution_or_native(dataset: str, resolution: int | None) -> int | None:
    if resolution is None or resolution == 0:
        return None
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise UserError(f"dataset {dataset!r}: resolution must be a positive integer, got {resolution!r}")
    return resolution


# ---- ImageFolder -------------------------------------------------------------

_FOLDER_LAYOUT = "an ImageFolder tree <path>/{train,val}/<class>/<image>.jpg|jpeg|png"
_SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation"), "unlabeled": ("unlabeled",)}


class ImageFolderDataset(ImageDataset):
    """Images decoded lazily per item, resized (shorter side) and centre-cropped to a square.

    With ``skip_corrupt`` an unreadable file is replaced by the next readable
    one and its path appended to ``corrupt_files`` (per process: DataLoader
    workers keep their own list).
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: Sequence[int],
        classes: Sequence[str],
        resolution: int,
        cache: bool,
        skip_corrupt: bool,
    ) -> None:
        self.files = list(files)
        self._labels = torch.tensor(list(labels), dtype=torch.int64)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.channels = 3
        self.source_resolution = resolution
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.cache = cache
        self.skip_corrupt = skip_corrupt
        self.corrupt_files: list[str] = []
        self._cache: dict[int, tuple[Tensor, int]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, index: int) -> Tensor:
        path = self.files[index]
        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError, ValueError) as error:
            raise DataError(f"cannot read image {path}: {error}") from error
        return resize_square_uint8(image.unsqueeze(0), self.source_resolution)[0]

    def _load(self, index: int) -> tuple[Tensor, int]:
        """The image at ``index`` (or, with skip_corrupt, at the next readable
        index) and the index it really came from, whose label it carries."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        for offset in range(len(self.files)):
            candidate = (index + offset) % len(self.files)
            try:
                image = self._decode(candidate)
            except DataError:
                if not self.skip_corrupt:
                    raise
                bad = str(self.files[candidate])
                if bad not in self.corrupt_files:
                    self.corrupt_files.append(bad)
                continue
            if self.cache:
                self._cache[index] = (image, candidate)
            return image, candidate
        raise DataError(f"no readable image among the {len(self.files)} files under {self.files[0].parents[1]}")

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, source = self._load(index)
        return image, int(self._labels[source])

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        loaded = [self._load(int(i)) for i in indices]
        return torch.stack([image for image, _ in loaded]), self._labels[[source for _, source in loaded]]

    @property
    def targets(self) -> Tensor:
        return self._labels


def _find_split_dir(root: Path, split: str) -> Path | None:
    for name in _SPLIT_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    return None


def _class_dirs(directory: Path) -> list[Path]:
    """The class sub-directories, sorted; hidden ones (.ipynb_checkpoints, .git) are not classes."""
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolderOptions(Options):
    """``data.options`` of ``data.dataset: imagefolder``."""

    cache: bool = Field(False, description="keep decoded images in memory after the first epoch")
    skip_corrupt: bool = Field(False, description="replace an unreadable file by the next readable one "
                               "(data.skip_corrupt sets it)")


@REGISTRY.datasets.register("imagefolder", options=ImageFolderOptions)
def build_imagefolder(
    *, split: str, resolution: int, seed: int, path: str | None, options: ImageFolderOptions
) -> ImageFolderDataset:
    """An ImageFolder tree ``path/{train,val}/<class>/*.jpg|png``. Split dirs: train, val|validation, unlabeled.

    The class list is the sorted sub-directories of ``train`` (or of the split
    itself when there is no train dir); an ``unlabeled`` dir may hold images
    directly or in sub-directories, and all of them get label -1.
    """
    check_split("imagefolder", split)
    size = _resolution_or_native("imagefolder", resolution)
    if size is None:
        raise UserError("dataset 'imagefolder': data.resolution is required (images have mixed sizes)")
    root = _require_path("imagefolder", path, _FOLDER_LAYOUT)
    split_dir = _find_split_dir(root, split)
    if split_dir is None:
        names = " or ".join(str(root / name) for name in _SPLIT_DIRS[split])
        raise DataError(f"dataset 'imagefolder': split directory {names} not found; expected {_FOLDER_LAYOUT}")
    class_root = _find_split_dir(root, "train") or split_dir
    classes = [p.name for p in _class_dirs(class_root)]
    files: list[Path] = []
    labels: list[int] = []
    if split == "unlabeled":
        files = _image_files(split_dir) + [
            f for d in sorted(split_dir.iterdir()) if d.is_dir() for f in _image_files(d)
        ]
        labels = [-1] * len(files)
    else:
        if not classes:
            raise DataError(f"dataset 'imagefolder': no class directories in {class_root}; expected {_FOLDER_LAYOUT}")
        index = {name: i for i, name in enumerate(classes)}
        for class_dir in _class_dirs(split_dir):
            if class_dir.name not in index:
                raise DataError(f"dataset 'imagefolder': class directory {class_dir} is not among the train classes")
            found = _image_files(class_dir)
            if not found:
                others = sorted(p.name for p in class_dir.iterdir())
                seen = f" (it holds {len(others)} other entries, e.g. {others[0]})" if others else " (it is empty)"
                raise DataError(
                    f"dataset 'imagefolder': class directory {class_dir} holds no .jpg/.jpeg/.png image{seen}; "
                    "every class needs at least one: add images or remove the folder"
                )
            files += found
            labels += [index[class_dir.name]] * len(found)
    if not files:
        raise DataError(
            f"dataset 'imagefolder': no .jpg/.jpeg/.png images under {split_dir}; expected {_FOLDER_LAYOUT}"
        )
    return ImageFolderDataset(
        files,
        labels,
        classes,
        size,
        cache=options.cache,
        skip_corrupt=options.skip_corrupt,
    )


# ---- CIFAR-10 python batches ------------------------------------------------------

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Only numpy array reconstruction and plain builtins: a pickle cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")


def load_pickle_safely(path: Path) -> Any:
    """Unpickle a data file allowing only builtins and numpy arrays; DataError naming the file otherwise."""
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as error:
        raise DataError(f"cannot read CIFAR batch {path}: {error}") from error


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch {path} is missing; expected data_batch_1..5 and test_batch")
    content = load_pickle_safely(path)
    if not isinstance(content, dict):
        raise DataError(f"CIFAR batch {path} does not hold a dict")
    entries = {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}
    data, labels = entries.get("data"), entries.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DataError(f"CIFAR batch {path}: expected 'data' (N, 3072) uint8 and 'labels'")
    label_array = np.asarray(labels, dtype=np.int64)
    if label_array.shape != (data.shape[0],) or label_array.min(initial=0) < 0 or label_array.max(initial=0) > 9:
        raise DataError(f"CIFAR batch {path}: {len(label_array)} labels in 0..9 expected for {data.shape[0]} images")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), label_array


class Cifar10Options(Options):
    """``data.dataset: cifar10`` has no options."""


@REGISTRY.datasets.register("cifar10", options=Cifar10Options)
def build_cifar10(
    *, split: str, resolution: int, seed: int, path: str | None, options: Cifar10Options
) -> TensorImageDataset:
    """CIFAR-10 "python" batches; ``path`` is ``cifar-10-batches-py`` or its parent."""
    check_split("cifar10", split)
    if split == "unlabeled":
        raise UserError("dataset 'cifar10' has no unlabeled split; use data.labeled_fraction to hide train labels")
    size = _resolution_or_native("cifar10", resolution) or 32
    root = _require_path("cifar10", path, "a directory cifar-10-batches-py/ with data_batch_1..5 and test_batch")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_read_cifar_batch(root / name) for name in names]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorImageDataset(
        resize_square_uint8(images, size), labels, num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD
    )


# ---- IDX (MNIST, Fashion-MNIST) --------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed): magic 0 0 <type> <ndim>, big-endian dims, data."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"IDX file {path}: bad magic number {raw[:4].hex()} (expected 0000 <type> <ndim>)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"IDX file {path}: header truncated ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"IDX file {path}: {len(raw) - header} data bytes, dimensions {dims} need {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx(root: Path, prefix: str, kind: str) -> Path:
    ndim = 3 if kind == "images" else 1
    candidates = [root / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"IDX file {candidates[0]} (or .gz) is missing")


class IdxOptions(Options):
    """``data.options`` of ``data.dataset: idx``."""

    num_classes: int = Field(10, ge=1, description="number of classes (labels 0..num_classes-1)")


@REGISTRY.datasets.register("idx", options=IdxOptions)
def build_idx(*, split: str, resolution: int, seed: int, path: str | None, options: IdxOptions) -> TensorImageDataset:
    """MNIST-style IDX files: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-* for val.

    mean/std are computed from the train images.
    """
    check_split("idx", split)
    if split == "unlabeled":
        raise UserError("dataset 'idx' has no unlabeled split; use data.labeled_fraction to hide train labels")
    num_classes = options.num_classes
    root = _require_path("idx", path, "a directory with train-/t10k- images-idx3-ubyte and labels-idx1-ubyte[.gz]")
    prefix = "train" if split == "train" else "t10k"
    image_file, label_file = _find_idx(root, prefix, "images"), _find_idx(root, prefix, "labels")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"IDX file {image_file}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"IDX file {label_file}: {labels.shape} labels for {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"IDX file {label_file}: labels outside 0..{num_classes - 1}")
    tensor = torch.from_numpy(images.copy()).unsqueeze(1)
    size = _resolution_or_native("idx", resolution) or max(tensor.shape[-2:])
    stats_source = tensor if split == "train" else torch.from_numpy(read_idx(_find_idx(root, "train", "images")).copy())
    mean, std = channel_stats(stats_source.reshape(-1, 1, *stats_source.shape[-2:]))
    return TensorImageDataset(
        resize_square_uint8(tensor, size),
        torch.from_numpy(labels.astype(np.int64)),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


# ---- .npz arrays ----------------------------------------------------------------


def _as_images(array: np.ndarray, source: str) -> Tensor:
    """uint8 (N, C, H, W) from NHWC / NCHW / NHW arrays (uint8, or float in [0, 1]);
    float32 (N, D) for vector data."""
    if array.ndim == 2:
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{source}: vector data (N, D) must be float, got {array.dtype}")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
            array = array.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        elif array.shape[1] not in (1, 3):
            raise DataError(f"{source}: cannot find a 1- or 3-channel axis in shape {array.shape}")
    else:
        raise DataError(f"{source}: expected images (N,H,W), (N,C,H,W), (N,H,W,C) or vectors (N,D); got {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1 or np.isnan(array).any()):
            raise DataError(f"{source}: float images must lie in [0, 1]")
        array = np.rint(array * 255)
    elif array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(f"{source}: integer images must lie in 0..255, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8))


def _as_labels(array: np.ndarray, count: int, source: str) -> Tensor:
    if not np.issubdtype(array.dtype, np.integer) or array.shape != (count,):
        raise DataError(f"{source}: labels must be integers of shape ({count},), got {array.dtype} {array.shape}")
    return torch.from_numpy(array.astype(np.int64))


def _stratified_val(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Boolean mask of a deterministic, per-class val split."""
    generator = torch.Generator().manual_seed(seed)
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        is_val[members[: round(fraction * len(members))]] = True
    return is_val


class NpzOptions(Options):
    """``data.options`` of ``data.dataset: npz``."""

    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of images/labels held out as val (files without x_val only)"
    )
    num_classes: int | None = Field(None, ge=1, description="number of classes; default: the largest label + 1")


@REGISTRY.datasets.register("npz", options=NpzOptions)
def build_npz(*, split: str, resolution: int, seed: int, path: str | None, options: NpzOptions) -> TensorImageDataset:
    """A .npz file with x_train, y_train, x_val, y_val (optional x_unlabeled), or images, labels.

    With only images/labels, val is a deterministic stratified ``val_fraction``
    (default 0.1) of them, chosen by ``seed``. Images: uint8 or float in [0, 1],
    NHWC, NCHW or NHW (1 or 3 channels). Vector data: float (N, D), returned as
    float "images" with channels = D and source_resolution = 0 (no resizing).
    Loaded with allow_pickle=False.
    """
    check_split("npz", split)
    file = _require_path("npz", path, "a .npz file with x_train, y_train, x_val, y_val (or images, labels)")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"cannot read npz file {file}: {error}") from error
    fraction = options.val_fraction

    def pair(x_key: str, y_key: str | None) -> tuple[Tensor, Tensor]:
        source = f"npz file {file}, array {x_key!r}"
        images = _as_images(arrays[x_key], source)
        if y_key is None or y_key not in arrays:
            return images, torch.full((images.shape[0],), -1, dtype=torch.int64)
        return images, _as_labels(arrays[y_key], images.shape[0], f"npz file {file}, array {y_key!r}")

    if "x_train" in arrays:
        train = pair("x_train", "y_train")
        if split == "unlabeled":
            if "x_unlabeled" not in arrays:
                raise DataError(f"npz file {file} has no 'x_unlabeled' array for the unlabeled split")
            chosen = pair("x_unlabeled", None)
        elif split == "val":
            if "x_val" not in arrays:
                raise DataError(f"npz file {file} has no 'x_val' array")
            chosen = pair("x_val", "y_val")
        else:
            chosen = train
    elif "images" in arrays:
        everything = pair("images", "labels")
        if split == "unlabeled":
            raise DataError(f"npz file {file} has no 'x_unlabeled' array for the unlabeled split")
        is_val = _stratified_val(everything[1], float(fraction), seed)
        if split == "val" and not bool(is_val.any()):
            raise UserError(f"dataset 'npz': val_fraction {fraction} leaves no validation samples in {file}")
        train = (everything[0][~is_val], everything[1][~is_val])
        chosen = (everything[0][is_val], everything[1][is_val]) if split == "val" else train
    else:
        raise DataError(
            f"npz file {file}: expected arrays x_train, y_train, x_val, y_val or images, labels; "
            f"found {', '.join(sorted(arrays)) or 'none'}"
        )
    images, labels = chosen
    if is_image_batch(images):
        size = _resolution_or_native("npz", resolution) or min(images.shape[-2:])
        images = resize_square_uint8(images, size)
    elif train[0].dim() != images.dim() or train[0].shape[1:] != images.shape[1:]:
        raise DataError(
            f"npz file {file}: {split} arrays have shape {tuple(images.shape)}, train {tuple(train[0].shape)}"
        )
    known = train[1][train[1] >= 0]
    num_classes = options.num_classes if options.num_classes is not None else (
        int(known.max()) + 1 if len(known) else 0
    )
    if labels.numel() and int(labels.max()) >= num_classes:
        raise DataError(f"npz file {file}: label {int(labels.max())} >= num_classes {num_classes}")
    mean, std = channel_stats(train[0])
    return TensorImageDataset(images, labels, num_classes=int(num_classes), mean=mean, std=std)


__all__ = [
    "ImageFolderDataset",
    "build_cifar10",
    "build_idx",
    "build_imagefolder",
    "build_npz",
    "load_pickle_safely",
    "read_idx",
]
