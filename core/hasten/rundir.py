"""Run directories: choosing and claiming one, the ownership lock, torchrun's elastic-restart environment.

:func:`claim_run_dir` is how a run gets its folder: rank 0 picks it
(:func:`make_run_dir`), locks it, refuses a folder holding an earlier run's
checkpoints unless resuming, and reads the checkpoint to resume from before
any data is built; every rank gets rank 0's answer.

A run directory belongs to one live run at a time. The process that writes
checkpoints (rank 0) holds ``<run_dir>/hasten.lock``: an exclusive
``fcntl.flock`` on the file, whose content is the owner's PID and host. The
kernel drops a flock when its process dies (even by SIGKILL), so the lock of
a crashed run is stale by construction and the next run takes it over; a
second run started while the owner is alive refuses to start, naming the PID.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from hasten.checkpoint import has_checkpoints, load_latest, remove_interrupted_writes
from hasten.errors import UserError

if TYPE_CHECKING:
    from hasten.config import Config

LOCK_NAME = "hasten.lock"


class RunDirLock:
    """Exclusive ownership of a run directory for the lifetime of this object (or :meth:`release`).

    ``name`` is the lock file in ``run_dir`` (default ``hasten.lock``); a sweep claims a run it is about to
    train with a lock file beside that run's folder (:func:`hasten.commands.sweep.run_plan`).
    """

    def __init__(self, run_dir: str | Path, name: str = LOCK_NAME) -> None:
        self.path = Path(run_dir) / name
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        """Take the lock; :class:`UserError` naming the owner when a live run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown pid"
            os.close(fd)
            what = f"run directory {self.path.parent}" if self.path.name == LOCK_NAME else str(self.path)
            raise UserError(
                f"{what} is in use by a live run ({owner}); "
                "wait for it to finish, stop it, or choose another run.run_dir"
            ) from None
        # Ours now (a dead owner's flock was released by the kernel): record who holds it.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (idempotent). The file stays: its content is only informative."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self) -> None:
        self.release()


def elastic_restart_count() -> int:
    """How many times torchrun's elastic agent restarted this job's workers (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def elastic_max_restarts() -> int:
    """torchrun's ``--max-restarts`` (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)


def elastic_run_dir(output_dir: str, name: str) -> Path | None:
    """The run directory an elastic job derives when ``run.run_dir`` is not set.

    Restarted workers must find the directory of the first attempt, so it cannot
    carry a timestamp. torchrun's rendezvous id (``--rdzv-id``, a fresh UUID under
    ``--standalone``) is the same for every attempt of one job; the default id
    ``none`` is not unique, and then ``run.run_dir`` is required.
    """
    if elastic_max_restarts() == 0:
        return None
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if run_id in ("", "none"):
        raise UserError(
            "run.run_dir: torchrun --max-restarts needs a fixed run directory so restarted workers resume "
            "from its checkpoints; set run.run_dir, or give torchrun --rdzv-id (or --standalone) to derive "
            f"{output_dir}/{name}-<rdzv-id>"
        )
    return Path(output_dir) / f"{name}-{run_id}"


#: files only a run directory holds (any one marks a folder as a run's)
RUN_MARKERS = ("checkpoints", LOCK_NAME, "mlflow_run_id", "metrics.jsonl")


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a folder some hasten run wrote (a run killed before its first checkpoint included)."""
    return path.is_dir() and any((path / marker).exists() for marker in RUN_MARKERS)


def nearest_run_dirs(wanted: Path, search: list[Path], limit: int = 3) -> list[str]:
    """The existing run folders next to ``wanted`` (and in ``search``) whose names are closest to its name."""
    import difflib

    by_name: dict[str, list[Path]] = {}
    for parent in dict.fromkeys([wanted.parent, *search]):
        if parent.is_dir():
            for child in sorted(parent.iterdir()):
                if is_run_dir(child):
                    by_name.setdefault(child.name, []).append(child)
    close = difflib.get_close_matches(wanted.name, list(by_name), n=limit, cutoff=0.4)
    return [str(path) for name in close for path in by_name[name]][:limit]


def check_resume_dir(run_dir: Path, search: list[Path]) -> None:
    """Refuse to resume ``run_dir`` unless it is a run's folder: a mistyped path must not become a new run."""
    if is_run_dir(run_dir):
        return
    what = "does not exist" if not run_dir.exists() else "is not a run folder (no checkpoints/, mlflow_run_id, ...)"
    near = nearest_run_dirs(run_dir, search)
    hint = f"; nearest run folders: {', '.join(near)}" if near else "; no run folders found near it"
    raise UserError(
        f"--resume {run_dir}: {what}, nothing to continue{hint}. "
        "Start a new run without --resume"
    )


def make_run_dir(config: Config, resume: bool | str) -> Path:
    """The run directory of ``config``: ``--resume RUN_DIR``, ``run.run_dir``, torchrun's elastic one,
    the newest run of this name (``--resume``), or a new ``<output_dir>/<name>-<timestamp>``."""
    if isinstance(resume, str) and resume:
        check_resume_dir(Path(resume), [Path(config.run.output_dir)])
        return Path(resume)
    if config.run.run_dir:
        if resume and elastic_restart_count() == 0:  # torchrun's restarts may find the folder not made yet
            check_resume_dir(Path(config.run.run_dir), [Path(config.run.output_dir)])
        return Path(config.run.run_dir)
    elastic = elastic_run_dir(config.run.output_dir, config.run.name)  # torchrun --max-restarts: no timestamp
    if elastic is not None:
        return elastic
    out = Path(config.run.output_dir)
    if resume:
        candidates = sorted(out.glob(f"{config.run.name}-*"))
        if not candidates:
            raise UserError(f"--resume: no earlier run named {config.run.name!r} under {out}")
        return candidates[-1]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return out / f"{config.run.name}-{stamp}"


def claim_run_dir(
    config: Config, resume: bool | str, rank: int, world_size: int
) -> tuple[Path, RunDirLock | None, tuple[Path, dict[str, Any]] | None]:
    """Rank 0 picks the run directory, locks it and checks it may start there; all ranks get its answer.

    Returns the directory, rank 0's lock (None elsewhere) and, on rank 0 when
    resuming, the checkpoint to continue from (path and content; None when
    the folder has none yet).
    """
    run_dir: Path | None = None
    lock: RunDirLock | None = None
    resume_from: tuple[Path, dict[str, Any]] | None = None
    problem: str | None = None
    if rank == 0:
        try:
            run_dir = make_run_dir(config, resume)
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = RunDirLock(run_dir).acquire()
            if not resume and has_checkpoints(run_dir):
                lock.release()
                raise UserError(
                    f"run directory {run_dir} already holds checkpoints of an earlier run; continue it with "
                    f"`hasten train CONFIG --resume {run_dir}` or choose another run.run_dir"
                )
            # We own the folder: a temporary file of a write a kill interrupted is nobody's now.
            for leftover in remove_interrupted_writes(run_dir):
                print(f"removed {leftover} (an interrupted checkpoint write)", file=sys.stderr)
            if resume:
                try:  # read before any data is built: a resume that cannot resume stops here
                    resume_from = load_latest(run_dir)
                except UserError:
                    lock.release()
                    raise
        except UserError as exc:
            problem = str(exc)
        except BaseException:
            if lock is not None:  # a run that never starts must not keep its directory locked
                lock.release()
            raise
    if world_size > 1:  # one decision for every rank (a timestamped name could differ between processes)
        shared = [None if run_dir is None else str(run_dir), problem]
        dist.broadcast_object_list(shared, src=0)
        run_dir, problem = (None if shared[0] is None else Path(shared[0])), shared[1]
    if problem is not None or run_dir is None:
        raise UserError(problem or "no run directory")
    return run_dir, lock, resume_from
