"""NVIDIA DALI back-end (``data.loader: dali``): decoding and augmentation in a DALI pipeline.

The contract with the core (docs/architecture.md, section "DALI"):

* **Data order.** The stream consumes exactly the indices of the
  :class:`~hasten.data.stream.StepBatchSampler` (candidate batch sizes,
  sharding, epoch boundaries and resume position included), so it feeds DALI
  through ``fn.external_source`` — encoded file bytes for ImageFolder trees,
  uint8 HWC arrays for in-memory datasets (procedural, npz, CIFAR, IDX) —
  instead of letting a DALI reader shuffle on its own.
* **Per-step parameters.** The engine pulls a batch after
  ``hasten_step_start``; the stream then asks the ``step_params`` callable the
  engine handed it for that step's resolution and magnitude and passes them,
  with every view's random parameters, as per-sample inputs of that iteration. The
  pipeline is built once and never rebuilt; one iteration is in flight at a
  time, so a changed resolution takes effect at the very step it is set.
* **Randomness.** Augmentation parameters are drawn on the host with numpy
  from ``(run.seed, rank, step)``: runs are reproducible, and a resume is
  exact without saving any generator state. They follow
  :class:`~hasten.data.augment.AugmentPolicy` (random resized crop with scale
  and ratio, flip, colour jitter of strength magnitude / 5 with probability,
  greyscale, blur, solarize), but the kernels differ from the torch path, so
  views are not bit-identical: contrast pivots on mid-grey (not the image's
  mean luminance), saturation and greyscale use DALI's linear HSV
  approximation (the neutral axis), resizing is DALI's antialiased linear
  filter.
* **What a batch holds.** ``images``: uint8 (N, C, R, R) at the source
  resolution R (decoded, shorter side resized to R, centre-cropped, as the
  torch readers do). ``views``: normalised float32 (N, C, r, r) at the step's
  resolution r, one per view (classification 1, ssl 2), filled only when the
  engine hands the stream a :class:`~hasten.data.augment.ViewSpec`: the task
  declares the loader-made views it needs (``Task.loader_views``) and the
  engine passes them unless a plugin implements ``hasten_views`` (Hard
  Augment); otherwise ``views`` stays empty and the engine's ``hasten_views``
  augments ``images`` on the device as with torch.
* **Devices.** ``data.dali_device`` (auto: gpu when ``run.device`` is CUDA):
  on cpu the pipeline has no device (``device_id=None``); on gpu JPEGs are
  decoded by the "mixed" (nvJPEG) decoder, the whole chain runs on the GPU and
  torch receives the outputs through DLPack on its current stream, without a
  host copy (DALI's default executor gives each output its own memory, so a
  tensor stays valid after the next iteration). The GPU path is not exercised
  by the test suite (no GPU on the development machine).

The validation split and the unlabeled stream keep the torch back-end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hasten.batch import Batch, is_image_batch
from hasten.data.augment import SIMCLR_MAGNITUDE, AugmentPolicy, ViewSpec
from hasten.data.stream import StepBatchSampler
from hasten.errors import DataError, UserError

INSTALL_HINT = "pip install hasten[dali] (the nvidia-dali-cuda120 wheel)"

# Columns of the uniform draw per sample and view (the same meaning as in hasten.data.augment).
(U_SCALE, U_RATIO, U_X, U_Y, U_FLIP, U_JITTER, U_BRIGHT, U_CONTRAST, U_SATURATE, U_HUE, U_GRAY, U_BLUR, U_SIGMA,
 U_SOLAR) = range(14)
DRAWS = 14
# Columns of the per-sample parameter vector the pipeline reads (float32).
P_ROI_START, P_ROI_END, P_SIZE = slice(0, 2), slice(2, 4), slice(4, 6)  # (y, x) relative; (h, w) pixels
P_BRIGHT, P_CONTRAST, P_SATURATE, P_HUE, P_SIGMA, P_WINDOW, P_SOLAR, P_MIRROR = range(6, 14)
PARAMS = 14


def require_dali() -> Any:
    """The ``nvidia.dali`` package, or a UserError naming the extra to install."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn  # the functional API, the math and types modules the pipeline uses
        import nvidia.dali.math
        import nvidia.dali.types  # noqa: F401
    except ImportError as error:
        raise UserError(
            f"data.loader: 'dali' needs NVIDIA DALI, which is not installed ({error}); "
            f"install it with `{INSTALL_HINT}`, or set data.loader: torch"
        ) from None
    return dali


def dali_device(setting: str, run_device: torch.device | None) -> str:
    """'cpu' or 'gpu' for ``data.dali_device`` (auto follows ``run.device``); a UserError when CUDA is missing."""
    if setting == "cpu":
        return "cpu"
    if setting == "auto":
        return "gpu" if run_device is not None and run_device.type == "cuda" else "cpu"
    if not torch.cuda.is_available():
        raise UserError(
            "data.dali_device: 'gpu' needs CUDA, which is not available here; "
            "set data.dali_device: cpu (or auto, which picks the GPU only when run.device is CUDA)"
        )
    if run_device is not None and run_device.type != "cuda":
        raise UserError(
            f"data.dali_device: 'gpu' with run.device on {run_device.type!r} would copy every batch back to "
            "the host; set run.device: cuda (or auto), or data.dali_device: cpu"
        )
    return "gpu"


def _lerp(u: np.ndarray, low: float, high: float) -> np.ndarray:
    return low + (high - low) * u


def draw_view_params(u: np.ndarray, policy: AugmentPolicy, resolution: int, magnitude: float) -> np.ndarray:
    """Per-sample pipeline parameters from uniforms ``u`` (..., DRAWS) -> float32 (..., PARAMS).

    The random resized crop is expressed relative to the square source image
    (area fraction in ``policy.crop_scale``, log-uniform aspect ratio, clamped
    to the image); colour jitter has strength ``magnitude / 5`` (brightness,
    contrast, saturation within 0.8 x strength, hue within 0.2 x strength of a
    turn) and is the identity for samples it does not hit; greyscale sets the
    saturation to 0; blur sigma is in [0.1, 2.0] * r / 224 (window 1 = none).
    """
    out = np.zeros((*u.shape[:-1], PARAMS), dtype=np.float32)
    area = _lerp(u[..., U_SCALE], *policy.crop_scale)
    ratio = np.exp(_lerp(u[..., U_RATIO], math.log(policy.crop_ratio[0]), math.log(policy.crop_ratio[1])))
    width = np.minimum(np.sqrt(area * ratio), 1.0)
    height = np.minimum(np.sqrt(area / ratio), 1.0)
    top, left = u[..., U_Y] * (1 - height), u[..., U_X] * (1 - width)
    out[..., P_ROI_START] = np.stack([top, left], axis=-1)
    out[..., P_ROI_END] = np.stack([top + height, left + width], axis=-1)
    out[..., P_SIZE] = resolution
    strength = magnitude / SIMCLR_MAGNITUDE
    amount = 0.8 * strength
    jitter = (u[..., U_JITTER] < policy.color_jitter) & (magnitude > 0)
    low, high = max(0.0, 1 - amount), 1 + amount
    out[..., P_BRIGHT] = np.where(jitter, _lerp(u[..., U_BRIGHT], low, high), 1.0)
    out[..., P_CONTRAST] = np.where(jitter, _lerp(u[..., U_CONTRAST], low, high), 1.0)
    saturation = np.where(jitter, _lerp(u[..., U_SATURATE], low, high), 1.0)
    out[..., P_SATURATE] = np.where(u[..., U_GRAY] < policy.grayscale, 0.0, saturation)
    hue = min(0.5, 0.2 * strength)
    out[..., P_HUE] = np.where(jitter, _lerp(u[..., U_HUE], -hue, hue) * 360.0, 0.0)  # degrees
    blur = u[..., U_BLUR] < policy.blur
    out[..., P_SIGMA] = np.where(blur, _lerp(u[..., U_SIGMA], 0.1, 2.0) * resolution / 224, 0.0)
    out[..., P_WINDOW] = np.where(blur, 0.0, 1.0)  # 0: DALI sizes the window from sigma; 1: identity
    out[..., P_SOLAR] = u[..., U_SOLAR] < policy.solarize
    out[..., P_MIRROR] = u[..., U_FLIP] < policy.flip
    return out


def _augment(dali: Any, images: Any, params: Any, spec: ViewSpec, channels: int, gpu: bool) -> Any:
    """One view: crop + resize, colour, blur, solarize, flip + normalise (values stay in 0..255 until then)."""
    fn, types, dmath = dali.fn, dali.types, dali.math
    policy = spec.policy
    x = fn.resize(
        images, roi_start=params[P_ROI_START], roi_end=params[P_ROI_END], roi_relative=True,
        size=params[P_SIZE], dtype=types.FLOAT, antialias=True,
    )
    colour = channels == 3 and (policy.color_jitter > 0 or policy.grayscale > 0)
    if colour or (channels == 1 and policy.color_jitter > 0):
        x = fn.brightness_contrast(
            x, brightness=params[P_BRIGHT], contrast=params[P_CONTRAST], contrast_center=128.0
        )
        x = dmath.clamp(x, 0.0, 255.0)
    if colour:
        x = dmath.clamp(fn.hsv(x, hue=params[P_HUE], saturation=params[P_SATURATE], dtype=types.FLOAT), 0.0, 255.0)
    if policy.blur > 0:
        x = fn.gaussian_blur(x, sigma=params[P_SIGMA], window_size=fn.cast(params[P_WINDOW], dtype=types.INT32))
    if policy.solarize > 0:
        flag = params[P_SOLAR]
        flag = flag.gpu() if gpu else flag
        x = x + flag * (x >= 127.5) * (255.0 - 2.0 * x)  # x -> 255 - x where solarized and bright
    return fn.crop_mirror_normalize(
        x, mirror=fn.cast(params[P_MIRROR], dtype=types.INT32), dtype=types.FLOAT, output_layout="CHW",
        mean=[255.0 * m for m in spec.mean], std=[255.0 * s for s in spec.std],
    )


def build_pipeline(
    *,
    encoded: bool,
    device: str,
    device_id: int | None,
    max_batch: int,
    threads: int,
    seed: int,
    source_resolution: int,
    channels: int,
    views: ViewSpec | None,
) -> Any:
    """The DALI pipeline, built once.

    Inputs (``fn.external_source``, one batch per iteration): ``encoded``
    (file bytes) or ``images`` (uint8 HWC), and ``params<v>`` (float32
    (PARAMS,) per sample) for each view. Outputs: the decoded images (uint8
    CHW, only when ``encoded``), then the views (float32 CHW).
    """
    dali = require_dali()
    fn, types = dali.fn, dali.types
    gpu = device == "gpu"
    # prefetch_queue_depth 1: the iteration run is the one just fed (its parameters are this step's).
    pipe = dali.Pipeline(
        batch_size=max_batch, num_threads=threads, device_id=device_id, seed=seed, prefetch_queue_depth=1
    )
    with pipe:
        outputs = []
        if encoded:
            data = fn.external_source(name="encoded", batch=True, dtype=types.UINT8, ndim=1)
            images = fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB)
            images = fn.resize(images, resize_shorter=source_resolution, antialias=True)
            # Centre crop at floor((size - R) / 2) like the torch readers: DALI rounds crop_pos * (size - R).
            centre = 0.5 - 1e-6
            images = fn.crop(images, crop=(source_resolution, source_resolution), crop_pos_x=centre, crop_pos_y=centre)
            outputs.append(fn.transpose(images, perm=[2, 0, 1], output_layout="CHW"))
        else:
            images = fn.external_source(name="images", batch=True, dtype=types.UINT8, ndim=3, layout="HWC")
            images = images.gpu() if gpu else images
        for view in range(views.num_views if views is not None else 0):
            params = fn.external_source(name=f"params{view}", batch=True, dtype=types.FLOAT, ndim=1)
            outputs.append(_augment(dali, images, params, views, channels, gpu))  # type: ignore[arg-type]
        pipe.set_outputs(*outputs)
    pipe.build()
    return pipe


class _Source:
    """Where a batch's samples come from: file paths (ImageFolder, decoded by DALI) or the dataset's arrays.

    ``IndexedSubset`` wrappers (labeled/unlabeled splits) are unwrapped to the
    ImageFolder they select from, so DALI still decodes the files.
    """

    def __init__(self, dataset: Any) -> None:
        from hasten.data.datasets import IndexedSubset
        from hasten.data.readers import ImageFolderDataset

        self.dataset = dataset
        rows: Tensor | None = None
        drop_labels = False
        base = dataset
        while isinstance(base, IndexedSubset):
            rows = base.indices if rows is None else base.indices[rows]
            drop_labels = drop_labels or base.drop_labels
            base = base.dataset
        self.files: list[Path] | None = None
        if isinstance(base, ImageFolderDataset):
            self.files = base.files
            self.rows = rows
            self.labels = base.targets
            self.drop_labels = drop_labels
        self.source_resolution = int(getattr(dataset, "source_resolution", 0))
        self.channels = int(getattr(dataset, "channels", 3))

    @property
    def encoded(self) -> bool:
        return self.files is not None

    def fetch(self, indices: list[int]) -> tuple[Any, Tensor | None, Tensor, dict[str, Tensor]]:
        """(pipeline input, images already decoded or None, labels, extras) of ``indices``."""
        if self.files is not None:
            rows = torch.as_tensor(indices, dtype=torch.int64)
            if self.rows is not None:
                rows = self.rows[rows]
            files = self.files
            # Reading the bytes is the loader's I/O (one read per file); DALI decodes them.
            encoded = [np.fromfile(files[i], dtype=np.uint8) for i in rows.tolist()]
            labels = torch.full((len(indices),), -1, dtype=torch.int64) if self.drop_labels else self.labels[rows]
            return encoded, None, labels, {}
        fetched = self.dataset.__getitems__(indices)
        images, labels = fetched[0], torch.as_tensor(fetched[1], dtype=torch.int64)
        if not is_image_batch(images) or images.dtype != torch.uint8:
            raise UserError(
                f"data.loader: 'dali' decodes and augments uint8 images; this dataset yields {images.dtype} "
                f"samples of shape {tuple(images.shape[1:])}; set data.loader: torch"
            )
        extras = dict(fetched[2]) if len(fetched) > 2 else {}
        return images.permute(0, 2, 3, 1).contiguous().numpy(), images, labels, extras

    def unreadable(self, indices: list[int]) -> str | None:
        """The first file among ``indices`` that torchvision cannot decode (to name it in an error)."""
        from torchvision.io import decode_image, read_file

        if self.files is None:
            return None
        rows = torch.as_tensor(indices, dtype=torch.int64)
        rows = self.rows[rows] if self.rows is not None else rows
        for row in rows.tolist():
            try:
                decode_image(read_file(str(self.files[row])))
            except (RuntimeError, OSError, ValueError):
                return str(self.files[row])
        return None


class DaliLoader:
    """Batches of a dataset through a DALI pipeline, in the order a sampler gives.

    ``step_params()`` returns the (resolution, magnitude) of the batch being
    formed; it is called once per batch, when the batch is requested. Batches
    larger than the pipeline's ``max_batch`` (a plugin's candidate batch that
    grew) run as several iterations with the same parameters.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        step_params: Callable[[], tuple[int, float]],
        views: ViewSpec | None,
        device: str = "cpu",
        device_id: int | None = None,
        threads: int = 1,
        seed: int = 0,
        rank: int = 0,
        max_batch: int = 0,
    ) -> None:
        require_dali()
        self.source = _Source(dataset)
        if self.source.source_resolution <= 0:
            raise UserError(
                "data.loader: 'dali' decodes and augments images; this dataset holds vectors "
                "(no source resolution); set data.loader: torch"
            )
        self.step_params = step_params
        self.views = views
        self.device = device
        self.device_id = device_id if device == "gpu" else None
        self.threads = max(1, threads)
        self.seed = seed
        self.rank = rank
        self.max_batch = max_batch
        self.pipe: Any = None
        self.pipe_batch = 0

    def _build(self, batch_size: int) -> None:
        self.pipe_batch = max(self.max_batch, batch_size)
        self.pipe = build_pipeline(
            encoded=self.source.encoded, device=self.device, device_id=self.device_id, max_batch=self.pipe_batch,
            threads=self.threads, seed=self.seed + self.rank, source_resolution=self.source.source_resolution,
            channels=self.source.channels, views=self.views,
        )

    def _run(self, feeds: dict[str, Any]) -> list[Tensor]:
        if self.device == "gpu":
            stream = torch.cuda.current_stream(torch.device("cuda", self.device_id or 0))
            outputs = self.pipe.run(stream.cuda_stream, **feeds)
        else:
            outputs = self.pipe.run(**feeds)
        # DLPack: torch shares DALI's output memory (host or device), which DALI does not reuse.
        return [torch.from_dlpack(output.as_tensor()) for output in outputs]

    def batch(self, indices: Sequence[int], step: int) -> Batch:
        """The batch of ``indices`` for training step ``step``."""
        indices = [int(i) for i in indices]
        count = len(indices)
        resolution, magnitude = self.step_params()
        pipeline_input, images, labels, extras = self.source.fetch(indices)
        feeds: dict[str, Any] = {"encoded" if self.source.encoded else "images": pipeline_input}
        if self.views is not None:
            rng = np.random.default_rng([self.seed, self.rank, step])
            u = rng.random((self.views.num_views, count, DRAWS))
            params = draw_view_params(u, self.views.policy, int(resolution), float(magnitude))
            feeds.update({f"params{v}": params[v] for v in range(self.views.num_views)})
        outputs: list[Tensor] = []
        if self.source.encoded or self.views is not None:
            if self.pipe is None:
                self._build(count)
            parts = []
            for start in range(0, count, self.pipe_batch):
                chunk = {name: value[start : start + self.pipe_batch] for name, value in feeds.items()}
                try:
                    parts.append(self._run(chunk))
                except RuntimeError as error:
                    bad = self.source.unreadable(indices[start : start + self.pipe_batch])
                    if bad is not None:
                        reason = str(error).strip().splitlines()[0]
                        raise DataError(f"cannot read image {bad} (DALI decoder): {reason}") from None
                    raise
            outputs = parts[0] if len(parts) == 1 else [torch.cat(group) for group in zip(*parts)]
        if self.source.encoded:
            images, outputs = outputs[0], outputs[1:]
        assert images is not None
        return Batch(
            images=images,
            labels=labels,
            indices=torch.as_tensor(indices, dtype=torch.int64),
            views=outputs,
            extras=extras,
        )

    def stream(self, sampler: StepBatchSampler) -> Iterator[Batch]:
        """One batch per training step from ``sampler.start_step`` on, forever."""
        step = sampler.start_step
        for indices in sampler:
            yield self.batch(indices, step)
            step += 1


def dali_stream(
    data: Any,
    dataset: Any,
    sampler: StepBatchSampler,
    *,
    views: ViewSpec | None = None,
    step_params: Callable[[], tuple[int, float]] | None = None,
    device: torch.device | None = None,
) -> Iterator[Batch]:
    """The training stream of ``data`` (a DataModule) through DALI; errors (no DALI, no CUDA) raise here, eagerly.

    ``views``: the views the pipeline makes (the engine passes the task's
    :meth:`~hasten.tasks.base.Task.loader_views` when no plugin builds its own),
    ``None`` for decoded images only. ``step_params`` answers the resolution
    and magnitude of the step whose batch is pulled (default: ``data.resolution``
    and ``data.augment.magnitude``). ``device``: the run's device (CUDA picks the
    GPU pipeline under ``dali_device: auto``).
    """
    config = data.config
    require_dali()
    if data.info.is_vector:
        raise UserError(
            f"data.loader: 'dali' decodes and augments images; dataset {config.data.dataset!r} holds vectors; "
            "set data.loader: torch"
        )
    if config.data.skip_corrupt:
        raise UserError(
            "data.skip_corrupt: not supported with data.loader: 'dali' (its decoder stops on an unreadable file); "
            "set data.loader: torch, or remove the unreadable files"
        )
    pipeline_device = dali_device(config.data.dali_device, device)
    device_id: int | None = None
    if pipeline_device == "gpu":
        device_id = device.index if device is not None and device.index is not None else (
            torch.cuda.current_device()
        )
    if step_params is None:
        fixed = (int(config.data.resolution), float(config.data.augment.magnitude))

        def step_params() -> tuple[int, float]:
            return fixed

    loader = DaliLoader(
        dataset, step_params=step_params, views=views, device=pipeline_device, device_id=device_id,
        threads=config.data.num_workers, seed=config.run.seed, rank=data.rank, max_batch=data.batch_size,
    )
    return loader.stream(sampler)
