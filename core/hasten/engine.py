"""The training engine: builds a run from a config and drives the hooks.

The engine organises training; it must not change it. With no technique
plugin enabled, its loss sequence equals a hand-written PyTorch loop with the
same model, data order, augmentation and seed (tests/test_parity.py).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hasten.accounting import FlopAccountant
from hasten.batch import is_image_batch
from hasten.checkpoint import (
    checkpoint_path,
    floating_tensors,
    gather_checkpoint,
    load_checkpoint,
    nonfinite_tensors,
    optimizer_state_tensors,
    restore_checkpoint,
    shared_resume_checkpoint,
    tensor_list,
    write_checkpoint,
)
from hasten.config import Config, validate_component_options
from hasten.data.augment import ViewSpec
from hasten.data.module import DataModule
from hasten.errors import TrainingInterrupted, TrainingStopped, UserError
from hasten.optim import build_optimizer, set_lr_and_momentum
from hasten.plugins import PluginSet, provided_capabilities
from hasten.preflight import preflight
from hasten.registry import REGISTRY
from hasten.rundir import RunDirLock, claim_run_dir, elastic_restart_count
from hasten.signals import StopSignals, signal_name
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


def builtin_plugins(config: Config, lr_owner: str | None, quiet: bool = False) -> list[object]:
    """The built-ins, in registration order (pluggy calls the last first). ``quiet``: no progress
    display and no printed summary (the run directory holds the summary either way)."""
    from hasten.builtins.core import Accounting, Defaults, Progress, Schedule
    from hasten.builtins.record import RunRecord

    progress = Progress(config.run.progress and not quiet, summary=not quiet)
    builtins: list[object] = [Defaults(), Schedule(config, lr_owner), Accounting(), progress, RunRecord(config)]
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
        quiet: bool = False,
        allow_nonfinite_resume: bool = False,
    ) -> None:
        self.config = config
        # --resume-allow-nonfinite: load a checkpoint holding NaN/inf tensors anyway (for inspection or repair)
        self.allow_nonfinite_resume = allow_nonfinite_resume
        self._state_checked_at: int | None = None  # the step whose state was last found finite
        # A worker restarted by torchrun's elastic agent (--max-restarts) continues the same run.
        self.resume: bool | str = resume or elastic_restart_count() > 0
        self.lock: RunDirLock | None = None  # rank 0 owns the run directory while it trains
        self.signals = StopSignals()  # SIGINT/SIGTERM received: checkpoint after this step, then stop
        self._losses: list[torch.Tensor] = []  # this process's per-step losses (device tensors)
        self._loss_prefix: list[torch.Tensor] = []  # the restored tail of the loss window, after a resume
        self._record: dict[str, Any] | None = None  # run.record_indices
        #: rank 0, when resuming: the checkpoint found when the run directory was claimed (before any work)
        self._resume_from: tuple[Path, dict[str, Any]] | None = None
        # Plugins are validated before any work: a bad config fails in milliseconds.
        enabled_caps = _enabled_capabilities(config)
        self.plugins = PluginSet.build(
            config, builtins=[*builtin_plugins(config, enabled_caps.get("lr_schedule"), quiet), *extra_builtins]
        )
        self.hooks = self.plugins.hook
        self.hooks.hasten_register(registry=REGISTRY)
        preflight(config)  # values only found wrong at the first forward or later: refused now
        validate_component_options(config, strict=True)  # plugins' components are registered now
        self.hooks.hasten_configure(config=config)
        try:
            self.state = self._build_state()
        except BaseException:
            self.close()  # a run that never starts must not keep its directory locked
            raise

    def close(self) -> None:
        """Release the run directory (``fit`` does it at its end; call it for a
        Trainer that is built but never fitted, e.g. by ``hasten estimate``)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

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
        run_dir, self.lock, self._resume_from = claim_run_dir(self.config, self.resume, rank, world_size)
        if run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        data = DataModule(config, rank=rank, world_size=world_size)
        torch.manual_seed(run.seed)  # model initialisation
        # Plugins may draw from Python's and numpy's global generators: seed them too (per rank), so that
        # a run is reproducible and a checkpoint's copy of their state is the uninterrupted run's.
        random.seed(run.seed + rank)
        np.random.seed((run.seed + rank) % 2**32)
        task_cls = REGISTRY.tasks.get(config.task.name, key="task.name")
        task = task_cls(config, data.info)
        model = task.model.to(device)
        if run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(config, model)
        if run.max_steps is not None:
            total_steps = run.max_steps
        else:
            total_steps = max(1, math.ceil((run.epochs or 1.0) * data.steps_per_epoch))
        # Each rank draws its own augmentation randomness (rank 0 keeps run.seed: single-process parity).
        generator = torch.Generator(device=device).manual_seed(run.seed + 1_000_003 * rank)
        state = State(
            config=config,
            model=model,
            optimizer=optimizer,
            task=task,
            data=data,
            device=device,
            flops=FlopAccountant(device=device, world_size=world_size),
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

            state.train_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.hooks.hasten_setup(state=state)
        return state

    # ------------------------------------------------------------- checkpoints
    def checkpoint_blob(self) -> dict[str, Any] | None:
        """The checkpoint content on rank 0, None on the other ranks (collective under torchrun)."""
        return gather_checkpoint(self.state, (self._loss_prefix + self._losses)[-self.config.run.log_every :])

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the finished ``state.step`` (rank 0 writes; every rank must call it)."""
        state = self.state
        self._check_state()  # a checkpoint is never written from non-finite weights, buffers or optimizer state
        blob = self.checkpoint_blob()
        path = checkpoint_path(state.run_dir, state.step)
        state.scratch["engine/last_checkpoint"] = str(path)
        if blob is None:
            return None
        write_checkpoint(state.run_dir, state.step, blob, self.config.run.keep_checkpoints)
        if self._record is not None:
            self._record["checkpoints"].append(state.step)
        return path

    def restore(self, source: str | Path | dict[str, Any]) -> None:
        """Continue from a checkpoint (a path, or its loaded content)."""
        blob = source if isinstance(source, dict) else load_checkpoint(source)
        self._loss_prefix = restore_checkpoint(self.state, blob)

    def _load_latest(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (read when the run directory was claimed), checked on every rank."""
        found, self._resume_from = self._resume_from, None
        blob, finite = shared_resume_checkpoint(self.state, found, allow_nonfinite=self.allow_nonfinite_resume)
        if blob is not None and finite:
            self._state_checked_at = int(blob["step"])
        return blob

    # ------------------------------------------------------- finite state
    def _check_state(self) -> None:
        """Stop (TrainingStopped) when a parameter, buffer (BatchNorm statistics), optimizer or task state
        tensor holds a NaN or an infinity. Called before every checkpoint and evaluation and at the end of
        the run only (one fused reduction and one host sync there): no per-step cost. A loss can stay finite
        while, say, a ``running_var`` has overflowed, so the loss check alone does not cover this."""
        state = self.state
        if self._state_checked_at == state.step:
            return  # checked at this step already (evaluation and checkpoint of the same step)
        named = list(floating_tensors("", state.model.state_dict()))
        param_names = {param: name for name, param in state.model.named_parameters()}
        named += optimizer_state_tensors(state.optimizer.state, param_names)
        named += floating_tensors("task", state.task.state_dict())
        bad = nonfinite_tensors(named)
        if state.world_size > 1:
            # Every rank must stop at the same check (a rank left behind would wait in the next collective);
            # BatchNorm statistics may differ between ranks, so any rank's bad tensor stops all of them.
            first = torch.tensor([len(named) if not bad else [n for n, _ in named].index(bad[0])],
                                 dtype=torch.long, device=state.device)
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
            index = int(first.item())
            if index < len(named) and not bad:
                bad = [named[index][0]]
        if not bad:
            self._state_checked_at = state.step
            return
        last = state.scratch.get("engine/last_checkpoint")
        since = (f"finite at the previous check, step {self._state_checked_at}"
                 if self._state_checked_at is not None else "first check of this run")
        raise TrainingStopped(
            f"non-finite model state at step {state.step}: NaN or inf in {tensor_list(bad)} ({since}); "
            f"last good checkpoint: {last or 'none written'}; {_divergence_hint(self.config)}",
            step=state.step,
            checkpoint=last,
        )

    def _write_record(self, first_step: int) -> None:
        """run.record_indices: what this rank trained on, for tests and debugging."""
        state, record = self.state, self._record
        if record is None:
            return
        params = torch.cat([p.detach().double().flatten().cpu() for p in state.model.parameters()])
        torch.save(
            {
                "rank": state.rank,
                "world_size": state.world_size,
                "pid": os.getpid(),
                "steps": list(range(first_step, state.step)),
                "indices": record["indices"],
                "losses": torch.stack(self._losses).cpu() if self._losses else torch.zeros(0),
                "logged": record["logged"],
                "checkpoints": record["checkpoints"],
                "param_sum": float(params.sum()),
                "param_abs_sum": float(params.abs().sum()),
            },
            Path(state.run_dir) / f"indices-rank{state.rank}.pt",
        )

    def loader_views(self) -> ViewSpec | None:
        """The views a self-augmenting loader (DALI) may make: the task's, unless a plugin builds its own."""
        if self.plugins.implemented_by_plugins("hasten_views"):
            return None
        return self.state.task.loader_views()

    # ------------------------------------------------------------------- loop
    def fit(self) -> RunResult:
        state, hooks, config = self.state, self.hooks, self.config
        if self.resume:
            state.scratch["engine/resumed"] = True  # tracking continues the run folder's MLflow run
            try:
                blob = self._load_latest()
                if blob is not None:
                    self.restore(blob)
            except BaseException:
                self.close()  # a refused resume must not keep its directory locked
                raise
        pin = state.device.type == "cuda"
        # Images a rank has consumed (the stream position); resumes restart there.
        stream: Iterator[Batch] = state.data.train_stream(
            lambda step: hooks.hasten_batch_size(state=state, step=step),
            start_step=state.step,
            start_position=state.images_loaded,
            pin_memory=pin,
            loader_views=self.loader_views(),
            step_params=lambda: (int(state.resolution), float(state.aug_magnitude)),  # pulled after step_start
            device=state.device,
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
        channels_last = config.run.channels_last
        losses = self._losses
        bad_step = torch.full((), -1, dtype=torch.long, device=state.device)
        started = time.perf_counter()
        window_start, window_samples = started, 0
        first_step = state.step
        if config.run.record_indices:
            self._record = {"indices": [], "logged": {}, "checkpoints": []}
        hooks.hasten_fit_start(state=state)
        self.signals.install()
        try:
            while state.step < state.total_steps:
                step = state.step
                if step % state.steps_per_epoch == 0:
                    state.epoch = step // state.steps_per_epoch
                    hooks.hasten_epoch_start(state=state)
                hooks.hasten_step_start(state=state)
                set_lr_and_momentum(state.optimizer, state.lr, state.momentum)

                batch = next(stream).to(state.device)
                state.images_loaded += len(batch)
                if self._record is not None:
                    self._record["indices"].append(batch.indices.cpu().clone())
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
                    batch.views = [
                        v.contiguous(memory_format=torch.channels_last) if is_image_batch(v) else v for v in batch.views
                    ]
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
                    window = losses[-log_every:]
                    if len(window) < log_every and self._loss_prefix:  # resumed inside a logging window
                        window = (self._loss_prefix + losses)[-log_every:]
                    metrics = self._train_metrics(output, window, window_samples / max(now - window_start, 1e-9))
                    window_start, window_samples = now, 0
                    for extra in hooks.hasten_step_metrics(state=state):
                        metrics.update(extra or {})
                    state.metrics.update(metrics)
                    if state.is_main:
                        hooks.hasten_log(state=state, metrics=metrics, step=step)
                        if self._record is not None:
                            self._record["logged"][step] = dict(metrics)
                if finished % state.steps_per_epoch == 0:
                    hooks.hasten_epoch_end(state=state)
                state.step = finished
                if finished % eval_every == 0 and finished != state.total_steps:
                    self._check_finite(bad_step)  # never evaluate (and log) non-finite weights
                    self._evaluate()
                if ckpt_every and finished % ckpt_every == 0 and finished != state.total_steps:
                    self._check_finite(bad_step)
                    self.save_checkpoint()
                if finished != state.total_steps:
                    sync_step = finished % log_every == 0 or bool(ckpt_every and finished % ckpt_every == 0)
                    signum = self.signals.pending(state.world_size, state.device, sync_step)
                    if signum:
                        self._stop_for_signal(signum, bad_step)
                if state.should_stop is not None:
                    state.stop_reason = state.should_stop
                    break
            self._check_finite(bad_step)
            self._check_state()  # the final weights too: a run never ends "finished" with non-finite state
            self._evaluate()
            if config.run.final_checkpoint:  # a finished run leaves its trained state, checkpoint_every or not
                self.save_checkpoint()
        except TrainingStopped as stop:
            state.stop_reason = str(stop)
            raise
        finally:
            self.signals.restore()
            try:
                self._write_record(first_step)
                hooks.hasten_fit_end(state=state)
            finally:
                self.close()
        return RunResult(
            metrics=dict(state.metrics),
            steps=state.step,
            run_dir=state.run_dir,
            wall_time=time.perf_counter() - started,
            losses=[float(x) for x in torch.stack(losses).tolist()] if losses else [],
            stop_reason=state.stop_reason,
            state=state,
        )

    def _stop_for_signal(self, signum: int, bad_step: torch.Tensor) -> None:
        """SIGINT/SIGTERM: checkpoint the finished step (unless just written), then stop."""
        state = self.state
        self._check_finite(bad_step)
        path = checkpoint_path(state.run_dir, state.step)
        if state.scratch.get("engine/last_checkpoint") != str(path):
            self.save_checkpoint()
        name = signal_name(signum)
        raise TrainingInterrupted(
            f"{name} received: stopped after step {state.step} of {state.total_steps}, checkpoint {path}; "
            f"continue with `hasten train CONFIG --resume {state.run_dir}`",
            step=state.step,
            checkpoint=str(path),
            signum=signum,
        )

    def _check_finite(self, bad_step: torch.Tensor) -> None:
        if self.state.world_size > 1:
            # Every rank must stop at the same check (a rank left behind would wait in the next collective):
            # agree on the earliest bad step of any rank.
            never = torch.iinfo(torch.long).max
            first = torch.where(bad_step < 0, never, bad_step).reshape(1)
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
            first_bad = -1 if int(first.item()) == never else int(first.item())
        else:
            first_bad = int(bad_step.item())
        if first_bad >= 0:
            last = self.state.scratch.get("engine/last_checkpoint")
            raise TrainingStopped(
                f"non-finite loss at step {first_bad}; last good checkpoint: {last or 'none written'}; "
                f"{_divergence_hint(self.config)}",
                step=first_bad,
                checkpoint=last,
            )

    def _train_metrics(self, output: StepOutput, window: list[torch.Tensor], throughput: float) -> dict[str, float]:
        state = self.state
        extra = [v.detach().float().mean() for v in output.metrics.values()]
        values = torch.stack([torch.stack(window).mean(), *extra])
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
        if self.config.data.skip_corrupt:  # unreadable files skipped so far, all ranks together
            skipped = torch.tensor([float(len(state.data.skipped_files))], device=state.device)
            if state.world_size > 1:
                dist.all_reduce(skipped)
            metrics["data/skipped_files"] = float(skipped.item())
        return metrics

    def _evaluate(self) -> None:
        state = self.state
        self._check_state()  # never evaluate (and log) non-finite weights or statistics
        if state.world_size > 1:
            # BatchNorm running statistics are updated per rank by the last forward; DDP would send rank 0's
            # at the next one. Send them now, so every shard is evaluated with the weights a checkpoint holds.
            for buffer in state.model.buffers():
                dist.broadcast(buffer, src=0)
        merged: dict[str, float] = {}
        for result in self.hooks.hasten_evaluate(state=state):
            merged.update(result or {})
        if merged:
            state.metrics.update(merged)
            if state.is_main:
                self.hooks.hasten_log(state=state, metrics=merged, step=state.step - 1)
                if self._record is not None:
                    self._record["logged"].setdefault(state.step - 1, {}).update(merged)


def _divergence_hint(config: Config) -> str:
    """What to try when training diverged."""
    hint = f"the run diverged: try a lower optim.lr (now {config.optim.lr:g})"
    if config.optim.grad_clip is None:
        hint += ", optim.grad_clip (e.g. 1.0)"
    return hint + " or a longer warm-up (schedule.warmup_steps)"


def _enabled_capabilities(config: Config) -> dict[str, str]:
    from hasten.plugins import installed_plugins

    infos = installed_plugins()
    classes = [infos[n].plugin_class for n in config.plugins if n in infos and infos[n].plugin_class is not None]
    return provided_capabilities(cls for cls in classes)  # type: ignore[misc]


def train(
    config: Config,
    *,
    resume: bool | str = False,
    extra_builtins: Iterable[object] = (),
    quiet: bool = False,
    allow_nonfinite_resume: bool = False,
) -> RunResult:
    """Train ``config`` and return the result (the Python API of ``hasten train``; ``quiet``: ``--quiet``)."""
    return Trainer(
        config, resume=resume, extra_builtins=extra_builtins, quiet=quiet, allow_nonfinite_resume=allow_nonfinite_resume
    ).fit()
