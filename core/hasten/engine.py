"""The training engine: builds a run from a config and drives the hooks.

The engine organises training; it must not change it. With no technique
plugin enabled, its loss sequence equals a hand-written PyTorch loop with the
same model, data order, augmentation and seed (tests/test_parity.py).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hasten.accounting import FlopAccountant
from hasten.checkpoint import latest_checkpoint, load_checkpoint, write_checkpoint
from hasten.config import Config
from hasten.data.module import DataModule
from hasten.errors import TrainingStopped, UserError
from hasten.plugins import PluginSet, provided_capabilities
from hasten.registry import REGISTRY
from hasten.state import Batch, State, StepOutput


@dataclass
class RunResult:
    """What ``train`` returns: final metrics and where the run lives."""

    metrics: dict[str, float]
    steps: int
    run_dir: str
    wall_time: float
    losses: list[float] = field(default_factory=list)
    stop_reason: str | None = None
    state: State | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device: 'cuda' requested but CUDA is not available; allowed here: auto, cpu")
    return torch.device(name)


def init_distributed(device_kind: str) -> tuple[int, int]:
    """Join torchrun's process group when launched by torchrun (env vars set)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def make_run_dir(config: Config, resume: bool | str) -> Path:
    if isinstance(resume, str) and resume:
        return Path(resume)
    if config.run.run_dir:
        return Path(config.run.run_dir)
    out = Path(config.run.output_dir)
    if resume:
        candidates = sorted(out.glob(f"{config.run.name}-*"))
        if not candidates:
            raise UserError(f"--resume: no earlier run named {config.run.name!r} under {out}")
        return candidates[-1]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return out / f"{config.run.name}-{stamp}"


def builtin_plugins(config: Config, lr_owner: str | None) -> list[object]:
    """The built-ins, in registration order (pluggy calls the last first)."""
    from hasten.builtins.core import Accounting, Defaults, Progress, Schedule

    builtins: list[object] = [Defaults(), Schedule(config, lr_owner), Accounting(), Progress(config.run.progress)]
    if config.tracking.enabled:
        try:
            from hasten.builtins.tracking import Tracking
        except ImportError:  # tracking is optional only while it is being built
            pass
        else:
            builtins.append(Tracking(config))
    return builtins


class Trainer:
    """One training run. ``Trainer(config).fit()`` trains and returns a :class:`RunResult`."""

    def __init__(
        self,
        config: Config,
        *,
        resume: bool | str = False,
        extra_builtins: Iterable[object] = (),
    ) -> None:
        self.config = config
        self.resume = resume
        # Plugins are validated before any work: a bad config fails in milliseconds.
        enabled_caps = _enabled_capabilities(config)
        self.plugins = PluginSet.build(
            config, builtins=[*builtin_plugins(config, enabled_caps.get("lr_schedule")), *extra_builtins]
        )
        self.hooks = self.plugins.hook
        self.hooks.hasten_register(registry=REGISTRY)
        self.hooks.hasten_configure(config=config)
        self.state = self._build_state()

    # ------------------------------------------------------------------ build
    def _build_state(self) -> State:
        config = self.config
        run = config.run
        if run.threads:
            torch.set_num_threads(run.threads)
        device = resolve_device(run.device)
        rank, world_size = init_distributed(device.type)
        if device.type == "cuda" and world_size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        if run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        data = DataModule(config, rank=rank, world_size=world_size)
        torch.manual_seed(run.seed)  # model initialisation
        task_cls = REGISTRY.tasks.get(config.task.name, key="task.name")
        task = task_cls(config, data.info)
        model = task.model.to(device)
        if run.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(config, model)
        if run.max_steps is not None:
            total_steps = run.max_steps
        else:
            total_steps = max(1, math.ceil((run.epochs or 1.0) * data.steps_per_epoch))
        generator = torch.Generator(device=device).manual_seed(run.seed)
        run_dir = make_run_dir(config, self.resume)
        state = State(
            config=config,
            model=model,
            optimizer=optimizer,
            task=task,
            data=data,
            device=device,
            flops=FlopAccountant(device=device),
            generator=generator,
            seed=run.seed,
            total_steps=total_steps,
            steps_per_epoch=data.steps_per_epoch,
            batch_size=data.batch_size,
            resolution=config.data.resolution,
            max_resolution=config.data.resolution,
            aug_magnitude=config.data.augment.magnitude,
            lr=config.optim.lr,
            momentum=config.optim.momentum,
            rank=rank,
            world_size=world_size,
            run_dir=str(run_dir),
            hooks=self.hooks,
        )
        state.train_model = model
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            state.train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.hooks.hasten_setup(state=state)
        return state

    # ------------------------------------------------------------- checkpoints
    def checkpoint_blob(self) -> dict[str, Any]:
        state = self.state
        plugin_blobs: dict[str, Any] = {}
        for part in self.hooks.hasten_state_dict(state=state):
            plugin_blobs.update(part or {})
        blob: dict[str, Any] = {
            "step": state.step,
            "epoch": state.epoch,
            "samples_seen": state.samples_seen,
            "images_loaded": state.images_loaded,
            "unlabeled_loaded": int(state.scratch.get("engine/unlabeled_loaded", 0)),
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "generator": state.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "flops": state.flops.state_dict(),
            "plugins": plugin_blobs,
        }
        if state.device.type == "cuda":
            blob["cuda_rng"] = torch.cuda.get_rng_state(state.device)
        return blob

    def save_checkpoint(self) -> Path | None:
        state = self.state
        if not state.is_main:
            return None
        path = write_checkpoint(state.run_dir, state.step, self.checkpoint_blob(), self.config.run.keep_checkpoints)
        state.scratch["engine/last_checkpoint"] = str(path)
        return path

    def restore(self, path: str | Path) -> None:
        state = self.state
        blob = load_checkpoint(path)
        state.model.load_state_dict(blob["model"])
        state.optimizer.load_state_dict(blob["optimizer"])
        state.generator.set_state(blob["generator"])
        torch.set_rng_state(blob["torch_rng"])
        if "cuda_rng" in blob and state.device.type == "cuda":
            torch.cuda.set_rng_state(blob["cuda_rng"], state.device)
        state.step = int(blob["step"])
        state.epoch = int(blob["epoch"])
        state.samples_seen = int(blob["samples_seen"])
        state.images_loaded = int(blob["images_loaded"])
        state.scratch["engine/unlabeled_loaded"] = int(blob.get("unlabeled_loaded", 0))
        state.flops.load_state_dict(blob["flops"])
        self.hooks.hasten_load_state_dict(state=state, blob=blob["plugins"])

    # ------------------------------------------------------------------- loop
    def fit(self) -> RunResult:
        state, hooks, config = self.state, self.hooks, self.config
        if self.resume:
            found = latest_checkpoint(state.run_dir)
            if found is not None:
                self.restore(found)
        pin = state.device.type == "cuda"
        # Images a rank has consumed (the stream position); resumes restart there.
        stream: Iterator[Batch] = state.data.train_stream(
            lambda step: hooks.hasten_batch_size(state=state, step=step),
            start_step=state.step,
            start_position=state.images_loaded,
            pin_memory=pin,
        )
        unlabeled = state.data.unlabeled_stream(
            start_step=state.step, start_position=int(state.scratch.get("engine/unlabeled_loaded", 0)), pin_memory=pin
        )
        eval_every = config.eval.every_steps or state.steps_per_epoch
        ckpt_every = config.run.checkpoint_every
        log_every = config.run.log_every
        autocast = (
            torch.autocast(device_type=state.device.type, dtype=torch.bfloat16)
            if config.run.precision == "bf16"
            else nullcontext()
        )
        channels_last = config.run.channels_last and state.device.type == "cuda"
        losses: list[torch.Tensor] = []
        bad_step = torch.full((), -1, dtype=torch.long, device=state.device)
        started = time.perf_counter()
        window_start, window_samples = started, 0
        hooks.hasten_fit_start(state=state)
        try:
            while state.step < state.total_steps:
                step = state.step
                if step % state.steps_per_epoch == 0:
                    state.epoch = step // state.steps_per_epoch
                    hooks.hasten_epoch_start(state=state)
                hooks.hasten_step_start(state=state)
                for group in state.optimizer.param_groups:
                    group["lr"] = state.lr
                    if "betas" in group:
                        group["betas"] = (state.momentum, group["betas"][1])
                    elif "momentum" in group:
                        group["momentum"] = state.momentum

                batch = next(stream).to(state.device)
                state.images_loaded += len(batch)
                if unlabeled is not None:
                    batch.unlabeled = next(unlabeled).to(state.device)
                    state.scratch["engine/unlabeled_loaded"] = (
                        int(state.scratch.get("engine/unlabeled_loaded", 0)) + len(batch.unlabeled)
                    )
                if not batch.views:
                    batch.views = hooks.hasten_views(state=state, batch=batch)
                selected = hooks.hasten_select(state=state, batch=batch)
                if selected is not None:
                    batch = selected
                if channels_last:
                    batch.views = [v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for v in batch.views]
                with autocast:
                    output: StepOutput = hooks.hasten_forward(state=state, batch=batch)
                if not output.num_samples:
                    output.num_samples = len(batch)
                state.optimizer.zero_grad(set_to_none=True)
                output.loss.backward()
                hooks.hasten_after_backward(state=state)
                if config.optim.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.optim.grad_clip)
                loss = output.loss.detach()
                # Record the first non-finite step on the device: no host sync per step.
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), step, bad_step)
                state.optimizer.step()
                state.samples_seen += output.num_samples * state.world_size
                window_samples += output.num_samples * state.world_size
                losses.append(loss)
                hooks.hasten_step_end(state=state, output=output)

                finished = step + 1
                if finished % log_every == 0 or finished == state.total_steps:
                    self._check_finite(bad_step)
                    now = time.perf_counter()
                    metrics = self._train_metrics(output, losses[-log_every:], window_samples / max(now - window_start, 1e-9))
                    window_start, window_samples = now, 0
                    for extra in hooks.hasten_step_metrics(state=state):
                        metrics.update(extra or {})
                    state.metrics.update(metrics)
                    if state.is_main:
                        hooks.hasten_log(state=state, metrics=metrics, step=step)
                if finished % state.steps_per_epoch == 0:
                    hooks.hasten_epoch_end(state=state)
                state.step = finished
                if finished % eval_every == 0 and finished != state.total_steps:
                    self._evaluate()
                if ckpt_every and finished % ckpt_every == 0 and finished != state.total_steps:
                    self._check_finite(bad_step)
                    self.save_checkpoint()
                if state.should_stop is not None:
                    state.stop_reason = state.should_stop
                    break
            self._check_finite(bad_step)
            self._evaluate()
            if ckpt_every:
                self.save_checkpoint()
        except TrainingStopped as stop:
            state.stop_reason = str(stop)
            raise
        finally:
            hooks.hasten_fit_end(state=state)
        return RunResult(
            metrics=dict(state.metrics),
            steps=state.step,
            run_dir=state.run_dir,
            wall_time=time.perf_counter() - started,
            losses=[float(x) for x in torch.stack(losses).tolist()] if losses else [],
            stop_reason=state.stop_reason,
            state=state,
        )

    def _check_finite(self, bad_step: torch.Tensor) -> None:
        first_bad = int(bad_step.item())
        if first_bad >= 0:
            last = self.state.scratch.get("engine/last_checkpoint")
            raise TrainingStopped(
                f"non-finite loss at step {first_bad}; last good checkpoint: {last or 'none written'}",
                step=first_bad,
                checkpoint=last,
            )

    def _train_metrics(self, output: StepOutput, window: list[torch.Tensor], throughput: float) -> dict[str, float]:
        state = self.state
        values = torch.stack([torch.stack(window).mean(), *[v.detach().float().mean() for v in output.metrics.values()]])
        if state.world_size > 1:
            dist.all_reduce(values)
            values /= state.world_size
        host = values.tolist()
        metrics = {
            "train/loss": host[0],
            "train/lr": state.lr,
            "train/momentum": state.momentum,
            "train/resolution": float(state.resolution),
            "train/aug_magnitude": float(state.aug_magnitude),
            "train/throughput": throughput,
            "train/epoch": state.step / state.steps_per_epoch,
            "train/images_loaded": float(state.images_loaded * state.world_size),
        }
        metrics.update({f"train/{k}": v for k, v in zip(output.metrics, host[1:], strict=True)})
        metrics.update(state.flops.metrics())
        return metrics

    def _evaluate(self) -> None:
        state = self.state
        merged: dict[str, float] = {}
        for result in self.hooks.hasten_evaluate(state=state):
            merged.update(result or {})
        if merged:
            state.metrics.update(merged)
            if state.is_main:
                self.hooks.hasten_log(state=state, metrics=merged, step=state.step - 1)


def _enabled_capabilities(config: Config) -> dict[str, str]:
    from hasten.plugins import installed_plugins

    infos = installed_plugins()
    classes = [infos[n].plugin_class for n in config.plugins if n in infos and infos[n].plugin_class is not None]
    return provided_capabilities(cls for cls in classes)  # type: ignore[misc]


def build_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    opt = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "sgd":
        return torch.optim.SGD(
            params, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov and opt.momentum > 0,
            weight_decay=opt.weight_decay,
        )
    return torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)


def train(config: Config, *, resume: bool | str = False, extra_builtins: Iterable[object] = ()) -> RunResult:
    """Train ``config`` and return the result (the Python API of ``hasten train``)."""
    return Trainer(config, resume=resume, extra_builtins=extra_builtins).fit()
