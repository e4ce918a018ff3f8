"""Datasets: the procedural default, the readers, subsets and labeled splits."""

from __future__ import annotations

import gzip
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.io import encode_jpeg, write_png

from hasten.data.datasets import IndexedSubset, TensorImageDataset, passthrough_collate, split_labeled
from hasten.data.procedural import CHUNK, NUM_CLASSES, render_scenes
from hasten.errors import DataError, UserError
from hasten.registry import REGISTRY

SHARED = Path(os.environ.get("HASTEN_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
FASHION = Path("/usr/share/datasets/fashion-mnist")


def build(name: str, split: str = "train", resolution: int | None = 32, path: object = None, **options: object):
    factory = REGISTRY.datasets.get(name)
    return factory(split=split, resolution=resolution, seed=0, path=None if path is None else str(path), **options)


# ---- procedural -------------------------------------------------------------------


def test_procedural_contract_and_balance() -> None:
    data = build("procedural", train_size=600, resolution=24)
    assert (len(data), data.num_classes, data.channels, data.source_resolution) == (600, 10, 3, 24)
    assert len(data.mean) == len(data.std) == 3
    image, label = data[5]
    assert image.dtype == torch.uint8 and image.shape == (3, 24, 24) and 0 <= label < 10
    images, labels = data.__getitems__([5, 0, 599])
    assert images.shape == (3, 3, 24, 24) and labels.dtype == torch.int64
    assert torch.equal(images[0], image) and int(labels[0]) == label
    counts = torch.bincount(data.targets[:CHUNK], minlength=NUM_CLASSES)
    assert counts.tolist() == [CHUNK // NUM_CLASSES] * NUM_CLASSES


def test_procedural_is_deterministic_prefix_stable_and_splits_differ() -> None:
    a_images, a_labels = render_scenes(620, 16, seed=3)
    b_images, b_labels = render_scenes(30, 16, seed=3)
    assert torch.equal(a_images[:30], b_images) and torch.equal(a_labels[:30], b_labels)
    c_images, _ = render_scenes(30, 16, seed=4)
    assert not torch.equal(b_images, c_images)
    train = build("procedural", train_size=300, resolution=16)
    val = build("procedural", "val", val_size=300, resolution=16)
    train_keys = {bytes(img.numpy()) for img in train.images}
    assert not train_keys & {bytes(img.numpy()) for img in val.images}


def test_procedural_scene_is_the_same_at_every_resolution() -> None:
    low, labels_low = render_scenes(40, 32, seed=1, difficulty=0.0)
    high, labels_high = render_scenes(40, 128, seed=1, difficulty=0.0)
    assert torch.equal(labels_low, labels_high)
    down = torch.nn.functional.interpolate(high.float(), size=(32, 32), mode="area")
    assert (down - low.float()).abs().mean() < 3.0  # in 0..255 units


def test_procedural_unlabeled_split_hides_labels() -> None:
    data = build("procedural", "unlabeled", unlabeled_size=100, resolution=16)
    assert len(data) == 100 and bool((data.targets == -1).all())
    assert data.num_classes == 10 and int(data.hidden_labels.min()) >= 0


def test_procedural_renders_5000_images_quickly() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # single-thread CPU time: no spin-waiting on a busy machine
    try:
        start = time.process_time()
        images, _ = render_scenes(5000, 32, seed=0)
        cpu_seconds = time.process_time() - start
    finally:
        torch.set_num_threads(threads)
    assert images.shape == (5000, 3, 32, 32)
    assert cpu_seconds < 3.0  # ~0.5 s on one idle core


def test_procedural_difficulty_controls_noise() -> None:
    clean, _ = render_scenes(50, 32, seed=0, difficulty=0.0)
    noisy, _ = render_scenes(50, 32, seed=0, difficulty=2.0)

    def roughness(x: torch.Tensor) -> float:
        return (x[..., 1:].float() - x[..., :-1].float()).abs().mean().item()

    assert roughness(noisy) > 3 * roughness(clean)


def test_procedural_fixed_colours_keep_the_geometry_and_remove_colour() -> None:
    coloured, labels = render_scenes(60, 24, seed=0, difficulty=0.0)
    grey, grey_labels = render_scenes(60, 24, seed=0, difficulty=0.0, colours="fixed")
    assert torch.equal(labels, grey_labels)

    # Same scenes: the object's pixels (where the image leaves its background colour) coincide.
    def object_mask(images: torch.Tensor) -> torch.Tensor:
        corner = images[:, :, :1, :1].float()
        return (images.float() - corner).abs().amax(1) > 40
    overlap = (object_mask(coloured) & object_mask(grey)).sum() / object_mask(grey).sum()
    assert overlap > 0.9
    # Every fixed-colour image uses the same grey levels: 0.15 background, 0.85 object.
    assert grey[:, 0].equal(grey[:, 1]) and grey[:, 1].equal(grey[:, 2])
    assert set(grey.unique().tolist()) <= set(range(round(0.15 * 255), round(0.85 * 255) + 1))
    with pytest.raises(UserError, match=r"data\.options\.colours: Input should be 'random' or 'fixed' \(got 'grey'\)"):
        build("procedural", colours="grey")


def test_procedural_depth_puts_the_object_in_front() -> None:
    images, labels, depth = render_scenes(100, 32, seed=0, with_depth=True)
    plain_images, plain_labels = render_scenes(100, 32, seed=0)
    assert torch.equal(images, plain_images) and torch.equal(labels, plain_labels)
    assert depth.shape == (100, 1, 32, 32) and depth.dtype == torch.float32
    assert depth.min() >= 1.0 and depth.max() <= 10.0
    near = (depth <= 2.5).flatten(1).float().mean(1)  # object plate at 1-2.5 m, background plane 3-10 m
    assert bool((near > 0.02).all()) and bool((near < 0.8).all())
    # the plane tilts: background depth varies across each image
    background = torch.where(depth > 2.9, depth, torch.nan).flatten(1)
    spread = background.nan_to_num(-1).amax(1) - background.nan_to_num(99).amin(1)
    assert spread.median() > 0.5


def test_procedural_rejects_unknown_options_and_splits() -> None:
    with pytest.raises(UserError) as error:
        build("procedural", train_sise=10)
    assert "data.options.train_sise: unknown key" in str(error.value) and "train_size" in str(error.value)
    with pytest.raises(UserError, match="unknown split 'test'"):
        build("procedural", "test")
    with pytest.raises(UserError, match="train_size"):
        build("procedural", train_size=0)


# ---- contract helpers ----------------------------------------------------------------


def small_dataset(n: int = 40) -> TensorImageDataset:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return TensorImageDataset(images, torch.arange(n) % 4, num_classes=4, mean=(0.5,) * 3, std=(0.2,) * 3)


def test_dataloader_batches_through_getitems_and_passthrough_collate() -> None:
    data = small_dataset()
    loader = DataLoader(data, batch_size=8, shuffle=False, collate_fn=passthrough_collate)
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 4, 4) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert images[:, 0, 0, 0].tolist() == list(range(8))
    pairs = [data[3], data[1]]
    stacked_images, stacked_labels = passthrough_collate(pairs)
    assert stacked_images[:, 0, 0, 0].tolist() == [3, 1] and stacked_labels.tolist() == [3, 1]
    batch = data.__getitems__([2, 9])
    assert passthrough_collate(batch)[0] is batch[0]


def test_indexed_subset_keeps_contract_and_can_drop_labels() -> None:
    data = small_dataset()
    subset = IndexedSubset(data, [5, 10, 15])
    assert (len(subset), subset.num_classes, subset.source_resolution, subset.mean) == (3, 4, 4, data.mean)
    images, labels = subset.__getitems__([2, 0])
    assert images[:, 0, 0, 0].tolist() == [15, 5] and labels.tolist() == [3, 1]
    assert subset[1][1] == 2 and subset.targets.tolist() == [1, 2, 3]
    hidden = IndexedSubset(data, [5, 10], drop_labels=True)
    assert hidden.__getitems__([0, 1])[1].tolist() == [-1, -1] and hidden[0][1] == -1
    with pytest.raises(IndexError):
        IndexedSubset(data, [40])


def test_split_labeled_is_stratified_disjoint_and_deterministic() -> None:
    data = build("procedural", train_size=500, resolution=8)
    labeled, unlabeled = split_labeled(data, 0.1, None, seed=1)
    assert len(labeled) == 50 and len(unlabeled) == 450
    assert sorted(labeled + unlabeled) == list(range(500))
    assert torch.bincount(data.targets[labeled], minlength=10).tolist() == [5] * 10
    assert split_labeled(data, 0.1, None, seed=1) == (labeled, unlabeled)
    assert split_labeled(data, 0.1, None, seed=2)[0] != labeled
    per_class, _ = split_labeled(data, None, 3, seed=0)
    assert torch.bincount(data.targets[per_class], minlength=10).tolist() == [3] * 10
    assert len(split_labeled(data, 0.001, None, seed=0)[0]) == 10  # at least one per class
    with pytest.raises(UserError, match="exactly one"):
        split_labeled(data, None, None, seed=0)
    with pytest.raises(UserError, match="exceeds"):
        split_labeled(data, None, 51, seed=0)


# ---- imagefolder ---------------------------------------------------------------------


def striped(height: int, width: int) -> torch.Tensor:
    """Left third red, middle third green, right third blue."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    third = width // 3
    image[0, :, :third] = 255
    image[1, :, third : 2 * third] = 255
    image[2, :, 2 * third :] = 255
    return image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for split, count in (("train", 3), ("validation", 1)):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                write_png(striped(20, 60), str(root / split / name / f"{i}.png"))
    (root / "train" / "dog" / "x.jpeg").write_bytes(encode_jpeg(striped(30, 30), quality=95).numpy().tobytes())
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_reads_resizes_and_centre_crops(folder: Path) -> None:
    data = build("imagefolder", path=folder, resolution=12)
    assert (len(data), data.num_classes, data.classes) == (7, 2, ["cat", "dog"])
    assert data.targets.tolist() == [0, 0, 0, 1, 1, 1, 1]
    image, label = data[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.uint8 and label == 0
    # 20x60 -> 12x36 -> centre 12x12 is the green third
    assert image[1].float().mean() > 240 and image[0].float().mean() < 15 and image[2].float().mean() < 15
    images, labels = data.__getitems__([6, 0])
    assert images.shape == (2, 3, 12, 12) and labels.tolist() == [1, 0]
    val = build("imagefolder", "val", path=folder, resolution=12)
    assert len(val) == 2 and val.targets.tolist() == [0, 1]
    assert val.mean == pytest.approx((0.485, 0.456, 0.406))


def test_imagefolder_cache_keeps_decoded_images(folder: Path) -> None:
    data = build("imagefolder", path=folder, resolution=8, cache=True)
    assert data[1][0] is data[1][0]
    assert build("imagefolder", path=folder, resolution=8)[1][0] is not data[1][0]


def test_imagefolder_corrupt_file_is_named_or_skipped(folder: Path) -> None:
    bad = folder / "train" / "cat" / "0.png"
    bad.write_bytes(b"\x89PNG broken")
    data = build("imagefolder", path=folder, resolution=8)
    with pytest.raises(DataError, match=str(bad)):
        data[0]
    lenient = build("imagefolder", path=folder, resolution=8, skip_corrupt=True)
    image, label = lenient[0]
    assert image.shape == (3, 8, 8) and label == 0
    assert torch.equal(image, data[1][0])  # replaced by the next readable file
    assert lenient.corrupt_files == [str(bad)]


def test_imagefolder_missing_paths_say_what_layout_is_expected(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(DataError, match="does not exist; expected an ImageFolder tree"):
        build("imagefolder", path=tmp_path / "nowhere", resolution=8)
    with pytest.raises(DataError, match=r"unlabeled not found; expected an ImageFolder"):
        build("imagefolder", "unlabeled", path=folder, resolution=8)
    with pytest.raises(UserError, match=r"data\.options\.colour: unknown key.*allowed: cache, skip_corrupt"):
        build("imagefolder", path=folder, resolution=8, colour=True)


@pytest.mark.skipif(
    not (SHARED / "imagenette2-128").is_dir(), reason="imagenette2-128 not present under HASTEN_SHARED_DATA"
)
def test_imagenette_copy_reads() -> None:
    train = build("imagefolder", path=SHARED / "imagenette2-128", resolution=64)
    val = build("imagefolder", "val", path=SHARED / "imagenette2-128", resolution=64)
    assert (len(train), len(val), train.num_classes) == (9469, 3925, 10)
    assert train.classes[0] == "n01440764"
    images, labels = val.__getitems__([0, 3924])
    assert images.shape == (2, 3, 64, 64) and labels.tolist() == [0, 9]
    assert images.float().std() > 10  # real content, not blank


# ---- cifar10 ----------------------------------------------------------------------------


def write_cifar(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 200, 100, 50  # R, G, B planes
        content = {
            b"batch_label": name.encode(),
            b"labels": [(i + j) % 10 for j in range(per_batch)],
            b"data": data,
            b"filenames": [b"x.png"] * per_batch,
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)
    return folder


def test_cifar10_reads_python_batches(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    train = build("cifar10", path=tmp_path)  # the parent of cifar-10-batches-py works
    assert (len(train), train.num_classes, train.source_resolution) == (20, 10, 32)
    image, label = train[0]
    assert image[:, 5, 7].tolist() == [200, 100, 50] and label == 0
    assert train.targets[4:8].tolist() == [1, 2, 3, 4]
    val = build("cifar10", "val", path=tmp_path / "cifar-10-batches-py", resolution=16)
    assert len(val) == 4 and val[0][0].shape == (3, 16, 16) and val[0][0][:, 8, 8].tolist() == [200, 100, 50]


def test_cifar10_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    with open(folder / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": Exploit()}, handle, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_3.*is not allowed"):
        build("cifar10", path=tmp_path)
    assert not marker.exists()
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch is missing"):
        build("cifar10", "val", path=tmp_path)


# ---- idx ----------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(root: Path, count: int = 6, compress: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(count)
        labels = np.arange(count) % 10
        for kind, array, ndim in (("images", images, 3), ("labels", labels, 1)):
            name = root / f"{prefix}-{kind}-idx{ndim}-ubyte"
            raw = idx_bytes(array)
            if compress:
                Path(f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                name.write_bytes(raw)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reads_images_and_labels(tmp_path: Path, compress: bool) -> None:
    write_idx(tmp_path, compress=compress)
    train = build("idx", path=tmp_path, resolution=None)
    assert (len(train), train.channels, train.source_resolution, train.num_classes) == (6, 1, 28, 10)
    assert train[3][0][0, 0, 0].item() == 3 and train.targets.tolist() == [0, 1, 2, 3, 4, 5]
    assert 0.3 < train.mean[0] < 0.7 and 0.2 < train.std[0] < 0.4  # uniform random pixels
    val = build("idx", "val", path=tmp_path, resolution=32)
    assert val[0][0].shape == (1, 32, 32) and val.mean == train.mean


def test_idx_validates_magic_and_size(tmp_path: Path) -> None:
    write_idx(tmp_path, compress=False)
    images = tmp_path / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:-5])
    with pytest.raises(DataError, match=f"{images}.*data bytes"):
        build("idx", path=tmp_path)
    images.write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(DataError, match=f"{images}: bad magic"):
        build("idx", path=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        build("idx", "val", path=tmp_path)


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not present in /usr/share/datasets/fashion-mnist")
def test_fashion_mnist_reads() -> None:
    val = build("idx", "val", path=FASHION, resolution=None)
    assert (len(val), val.num_classes, val.source_resolution) == (10000, 10, 28)
    assert torch.bincount(val.targets).tolist() == [1000] * 10


# ---- npz -------------------------------------------------------------------------------------


def test_npz_named_splits_in_either_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    file = tmp_path / "d.npz"
    nhwc = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    np.savez(
        file,
        x_train=nhwc,
        y_train=np.arange(10) % 3,
        x_val=rng.random((4, 3, 8, 8)).astype(np.float32),
        y_val=np.arange(4) % 3,
    )
    train = build("npz", path=file, resolution=None)
    assert (len(train), train.channels, train.source_resolution, train.num_classes) == (10, 3, 8, 3)
    assert torch.equal(train[2][0], torch.from_numpy(nhwc[2]).permute(2, 0, 1))
    val = build("npz", "val", path=file, resolution=16)
    assert val[0][0].shape == (3, 16, 16) and val[0][0].dtype == torch.uint8
    assert val.mean == train.mean  # statistics of the train arrays


def test_npz_single_array_gets_a_deterministic_val_split(tmp_path: Path) -> None:
    file = tmp_path / "d.npz"
    np.savez(file, images=np.zeros((100, 1, 4, 4), dtype=np.uint8), labels=np.arange(100) % 2)
    train = build("npz", path=file, val_fraction=0.2, resolution=None)
    val = build("npz", "val", path=file, val_fraction=0.2, resolution=None)
    assert (len(train), len(val)) == (80, 20)
    assert torch.bincount(val.targets).tolist() == [10, 10]


def test_npz_vector_data_for_the_mlp(tmp_path: Path) -> None:
    file = tmp_path / "spiral.npz"
    points = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    np.savez(file, x_train=points, y_train=np.arange(50) % 2, x_val=points[:5], y_val=np.zeros(5, dtype=np.int64))
    data = build("npz", path=file, resolution=None)
    assert (data.channels, data.source_resolution, data.num_classes) == (2, 0, 2)
    vectors, _ = data.__getitems__([0, 1])
    assert vectors.dtype == torch.float32 and vectors.shape == (2, 2)
    torch.testing.assert_close(vectors, torch.from_numpy(points[:2]))
    assert data.mean == pytest.approx(tuple(points.mean(0).tolist()), abs=1e-6)


def test_npz_rejects_bad_content(tmp_path: Path) -> None:
    file = tmp_path / "bad.npz"
    np.savez(file, x_train=np.full((3, 4, 4), 2.0), y_train=np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match=r"bad.npz.*'x_train'.*\[0, 1\]"):
        build("npz", path=file)
    np.savez(file, something=np.zeros(3))
    with pytest.raises(DataError, match="expected arrays x_train"):
        build("npz", path=file)
    with pytest.raises(UserError, match=r"data\.options\.val_fraction: Input should be less than 1 \(got 1\.5\)"):
        build("npz", path=file, val_fraction=1.5)
