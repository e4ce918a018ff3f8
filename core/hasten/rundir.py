"""Run directories: the ownership lock and torchrun's elastic-restart environment.

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
from pathlib import Path

from hasten.errors import UserError

LOCK_NAME = "hasten.lock"


class RunDirLock:
    """Exclusive ownership of a run directory for the lifetime of this object (or :meth:`release`)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
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
            raise UserError(
                f"run directory {self.path.parent} is in use by a live run ({owner}); "
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
