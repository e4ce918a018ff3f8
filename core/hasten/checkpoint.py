"""Checkpoints: what a run's checkpoint holds, atomic writes, safe loads, discovery of the latest valid one.

A checkpoint is a ``torch.save`` dict of tensors and plain values only, so it
loads with ``torch.load(weights_only=True)``: a file carrying a pickled object
that would run code is refused. Writes go to a temporary file in the same
folder, are fsync'ed, then renamed over the final name, so a run killed at
any moment leaves either the old or the new checkpoint, never half of one.

:func:`gather_checkpoint` and :func:`restore_checkpoint` are the content: the
model and optimizer once (the same on every rank under DDP), and per rank
the random generators, stream positions, the loss window and the task's and
plugins' state (``hasten_state_dict`` / ``hasten_load_state_dict``).
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from hasten.errors import UserError

if TYPE_CHECKING:
    from hasten.state import State

_NAME = re.compile(r"^step-(\d{9})\.pt$")
#: what save_atomic writes before the rename (``.step-<step>.pt.tmp-<pid>``)
_TMP = re.compile(r"^\.step-\d{9}\.pt\.tmp-\d+$")
#: appended to an unreadable checkpoint that a resume stepped over
DAMAGED_SUFFIX = ".damaged"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_atomic(blob: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(blob, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint written after ``step`` optimizer steps lives."""
    return checkpoint_dir(run_dir) / f"step-{step:09d}.pt"


def write_checkpoint(run_dir: str | Path, step: int, blob: dict[str, Any], keep: int) -> Path:
    """Write ``step-<step>.pt`` atomically and prune all but the newest ``keep``."""
    folder = checkpoint_dir(run_dir)
    path = checkpoint_path(run_dir, step)
    save_atomic(blob, path)
    existing = sorted(p for p in folder.iterdir() if _NAME.match(p.name))
    for old in existing[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load safely (``weights_only=True``); a file that is not a plain
    checkpoint raises :class:`UserError` naming it."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means "refused"
        raise UserError(f"{path}: not a loadable hasten checkpoint (refused by the safe loader: {exc})") from None
    if not isinstance(blob, dict) or "step" not in blob or "model" not in blob:
        raise UserError(f"{path}: not a hasten checkpoint (no step/model entries)")
    return blob


def floating_tensors(prefix: str, value: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Every floating-point (or complex) tensor in the nested dicts and lists ``value``, named by its
    path under ``prefix`` (``prefix.key.0``); integer tensors cannot be non-finite and are left out."""
    if isinstance(value, torch.Tensor):
        if (value.is_floating_point() or value.is_complex()) and value.numel():
            yield prefix, value.detach()
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from floating_tensors(f"{prefix}.{key}" if prefix else str(key), item)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from floating_tensors(f"{prefix}.{index}" if prefix else str(index), item)


def nonfinite_tensors(named: Sequence[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors of ``named`` that hold a NaN or an infinity, in order.

    One fused reduction per device (``torch._foreach_norm`` with ord=inf: max |x|, which is NaN or
    infinite exactly when the tensor holds one, and cannot overflow) and one host transfer: meant for
    checkpoint and evaluation steps, which synchronise anyway, never for every step.
    """
    by_device: dict[torch.device, list[int]] = {}
    for index, (_name, tensor) in enumerate(named):
        by_device.setdefault(tensor.device, []).append(index)
    finite = [True] * len(named)
    for indices in by_device.values():
        norms = torch._foreach_norm([named[i][1] for i in indices], float("inf"))
        flags = torch.isfinite(torch.stack(norms)).tolist()  # the one host synchronisation
        for i, ok in zip(indices, flags, strict=True):
            finite[i] = bool(ok)
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


def optimizer_state_tensors(
    optimizer_state: dict[Any, Any], param_names: dict[Any, str]
) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of an optimizer's per-parameter state (``optimizer.state`` keyed by parameter, or a
    state dict's ``state`` keyed by index), named ``optimizer.state[<parameter name>].<key>``."""
    for key, entries in optimizer_state.items():
        yield from floating_tensors(f"optimizer.state[{param_names.get(key, key)}]", entries)


def checkpoint_tensors(blob: dict[str, Any], param_names: Sequence[str] = ()) -> list[tuple[str, torch.Tensor]]:
    """What a loaded checkpoint holds of the model (parameters and buffers, by their state-dict names),
    the optimizer state (named by ``param_names``, the optimizer's parameters in order) and the task
    state (every rank's), as (name, tensor) pairs."""
    named = list(floating_tensors("", blob.get("model", {})))
    optimizer = blob.get("optimizer", {})
    if isinstance(optimizer, dict):
        named += optimizer_state_tensors(optimizer.get("state", {}), dict(enumerate(param_names)))
    named += floating_tensors("task", blob.get("task", {}))
    for rank, part in enumerate(blob.get("ranks", [])):
        if isinstance(part, dict) and rank > 0:  # rank 0's task state is ``task`` already
            named += floating_tensors(f"ranks[{rank}].task", part.get("task", {}))
    return named


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``run_dir`` that loads, or None."""
    found = load_latest(run_dir)
    return None if found is None else found[0]


def load_latest(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``run_dir`` that loads, with its content; None when it has none.

    Older ones are tried when the newest is unreadable (e.g. truncated by a
    full disk). An unreadable file is never deleted nor overwritten: when an
    older checkpoint is used, the unreadable newer ones are renamed
    ``<name>.damaged`` (kept as evidence, out of the way of the resumed run's
    writes and pruning). When no checkpoint loads, :class:`UserError` names
    them and nothing is touched.
    """
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    unreadable: list[tuple[Path, str]] = []
    for path in sorted((p for p in folder.iterdir() if _NAME.match(p.name)), reverse=True):
        try:
            blob = load_checkpoint(path)
        except UserError as exc:
            unreadable.append((path, str(exc)))
            continue
        for bad, reason in unreadable:
            kept = bad.with_name(bad.name + DAMAGED_SUFFIX)
            os.replace(bad, kept)
            print(f"warning: skipping checkpoint {bad} ({reason}); kept as {kept}", file=sys.stderr)
        return path, blob
    if unreadable:
        names = ", ".join(str(bad) for bad, _ in unreadable)
        raise UserError(
            f"--resume: no checkpoint of {run_dir} can be read ({unreadable[0][1]}); nothing was changed. "
            f"Unreadable: {names}. Restore the file(s) from a backup, or move them out of {folder} "
            "to start this run again from step 0"
        )
    return None


def remove_interrupted_writes(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes a killed run left behind; returns them.

    Only call it while holding the run directory's lock: a live writer's file
    would otherwise be removed. They are never checkpoints (the rename that
    makes one did not happen), so nothing readable is lost.
    """
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.iterdir() if _TMP.match(p.name) and p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The steps of ``run_dir``'s checkpoints, by their file names (ascending; none loaded)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def has_checkpoints(run_dir: str | Path) -> bool:
    return bool(checkpoint_steps(run_dir))


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random generator a run draws from, as plain tensors and numbers.

    The run's ``generator``, torch's global CPU (and CUDA) generator, and the
    ``random`` and ``numpy`` global generators (plugins may use them). numpy's
    state becomes a tensor so that the checkpoint still loads with ``weights_only``.
    """
    numpy_state: Any = np.random.get_state()  # the legacy tuple ("MT19937", keys, pos, has_gauss, cached)
    _kind, keys, pos, has_gauss, cached = numpy_state
    state: dict[str, Any] = {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Restore what :func:`rng_state` captured."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    random.setstate((3, tuple(int(v) for v in state["python"]), state.get("python_gauss")))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))


# ------------------------------------------------------------------ content of a run's checkpoint
def _rank_part(state: State, recent_losses: list[torch.Tensor]) -> dict[str, Any]:
    """This process's part of a checkpoint: what differs between ranks and an exact resume needs."""
    plugin_blobs: dict[str, Any] = {}
    for part in state.hooks.hasten_state_dict(state=state):
        plugin_blobs.update(part or {})
    return to_cpu({
        "rng": rng_state(state.generator, state.device),
        "images_loaded": state.images_loaded,
        "unlabeled_loaded": int(state.scratch.get("engine/unlabeled_loaded", 0)),
        # the losses of the current logging window, so the next logged train/loss is the same
        "recent_losses": torch.stack(recent_losses) if recent_losses else torch.zeros(0),
        "task": state.task.state_dict(),
        "plugins": plugin_blobs,
    })


def gather_checkpoint(state: State, recent_losses: list[torch.Tensor]) -> dict[str, Any] | None:
    """The checkpoint content on rank 0, None on the other ranks (``recent_losses``: the loss window).

    Collective under torchrun: every rank's part (random generators, stream
    positions, plugin and task state) is gathered into ``ranks``; the model
    and optimizer are the same on every rank (DDP) and saved once.
    """
    mine = _rank_part(state, recent_losses)
    parts: list[Any] = [mine]
    if state.world_size > 1:
        parts = [None] * state.world_size if state.is_main else []
        dist.gather_object(mine, parts if state.is_main else None, dst=0)
    if not state.is_main:
        return None
    return {
        "step": state.step,
        "epoch": state.epoch,
        "samples_seen": state.samples_seen,
        "images_loaded": state.images_loaded,
        "world_size": state.world_size,
        "model": state.model.state_dict(),
        "task": mine["task"],
        "optimizer": state.optimizer.state_dict(),
        "flops": state.flops.state_dict(),
        "metrics": dict(state.metrics),
        "plugins": mine["plugins"],
        "ranks": parts,
    }


def restore_checkpoint(state: State, blob: dict[str, Any]) -> list[torch.Tensor]:
    """Put ``blob`` (what :func:`gather_checkpoint` made) back into ``state``; returns the restored
    tail of the loss window (empty when the process count changed)."""
    state.model.load_state_dict(blob["model"])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.step = int(blob["step"])
    state.epoch = int(blob["epoch"])
    state.samples_seen = int(blob["samples_seen"])
    state.flops.load_state_dict(blob["flops"])
    state.metrics.update(blob.get("metrics", {}))
    saved_world = int(blob.get("world_size", 1))
    ranks = blob["ranks"]
    loss_prefix: list[torch.Tensor] = []
    if saved_world == state.world_size:
        mine = ranks[state.rank]
        set_rng_state(mine["rng"], state.generator, state.device)
        state.images_loaded = int(mine["images_loaded"])
        state.scratch["engine/unlabeled_loaded"] = int(mine["unlabeled_loaded"])
        loss_prefix = list(mine["recent_losses"].to(state.device).unbind(0))
    else:
        # An elastic job came back with another number of processes: continue at the same global data
        # position; the random streams restart from the seeds, so this resume is not bit-exact.
        mine = ranks[0]
        state.images_loaded = int(blob["images_loaded"]) * saved_world // state.world_size
        state.scratch["engine/unlabeled_loaded"] = int(mine["unlabeled_loaded"]) * saved_world // state.world_size
        if state.is_main:
            print(
                f"warning: resuming a {saved_world}-process checkpoint with {state.world_size} processes: "
                "same data position, fresh random streams (not bit-identical to an uninterrupted run)",
                file=sys.stderr,
            )
    state.task.load_state_dict(mine.get("task", blob.get("task", {})))
    state.hooks.hasten_load_state_dict(state=state, blob=mine["plugins"])
    return loss_prefix


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor moved to the CPU (checkpoint parts travel between processes)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


def shared_resume_checkpoint(
    state: State, found: tuple[Path, dict[str, Any]] | None, *, allow_nonfinite: bool = False
) -> tuple[dict[str, Any] | None, bool]:
    """The checkpoint a resume continues from, on every rank, and whether it is finite.

    ``found``: rank 0's (path, content) from :func:`hasten.rundir.claim_run_dir`; rank 0 sends
    it to the other ranks (multi-node runs need no shared file system). A checkpoint holding
    NaN or inf is refused (:class:`UserError`) unless ``allow_nonfinite``; a finite one becomes
    the run's last good checkpoint (``state.scratch["engine/last_checkpoint"]``).
    """
    if state.world_size > 1:
        shared = [found]
        dist.broadcast_object_list(shared, src=0)
        found = shared[0]
    if found is None:
        if state.is_main:
            print(
                f"warning: --resume: no checkpoint in {state.run_dir} (stopped before its first one); "
                "starting from step 0", file=sys.stderr,
            )
        return None, False
    path, blob = found
    # Every rank holds the same blob: all refuse (or accept) alike, before any work.
    bad = nonfinite_tensors(checkpoint_tensors(blob, optimizer_param_names(state.model, state.optimizer)))
    if bad and not allow_nonfinite:
        raise UserError(
            f"--resume: {path} holds non-finite values (NaN or inf) in {tensor_list(bad)}; training on from "
            "it cannot recover. Resume from an earlier run or checkpoint, start afresh with a lower "
            "optim.lr, or pass --resume-allow-nonfinite to load it anyway"
        )
    if bad:
        if state.is_main:
            print(f"warning: --resume-allow-nonfinite: {path} holds non-finite values in {tensor_list(bad)}; "
                  "loading it anyway (it is not counted as a good checkpoint)", file=sys.stderr)
    else:
        state.scratch["engine/last_checkpoint"] = str(path)
    if state.is_main:
        print(f"resuming from {path} (step {blob['step']})", file=sys.stderr)
    return blob, not bad


def optimizer_param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The model's parameter names in the optimizer's order (its state dict numbers them so)."""
    names = {param: name for name, param in model.named_parameters()}
    return [names.get(p, f"param{i}") for i, p in
            enumerate(p for group in optimizer.param_groups for p in group["params"])]


def tensor_list(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 8 more tensors``: the first few names of a long list."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more tensor{'s' if more > 1 else ''}" if more > 0 else "")
