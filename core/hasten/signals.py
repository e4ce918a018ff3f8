"""SIGINT and SIGTERM during training: checkpoint after the current step, then stop.

The engine installs :class:`StopSignals` for the length of ``fit``. The first
signal is only recorded; the loop asks :meth:`StopSignals.pending` after each
step and stops there with a checkpoint (``TrainingInterrupted``, exit status
128 + the signal number). A second signal of the same kind acts at once
(SIGINT: ``KeyboardInterrupt``, SIGTERM: the previous handler, by default
terminate).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch
import torch.distributed as dist

#: the signals that stop a run after its current step
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The stop request of SIGINT/SIGTERM, between :meth:`install` and :meth:`restore`."""

    def __init__(self) -> None:
        self.received = 0  # the signal number received (0: none)
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = signum
        # A second signal of the same kind acts at once (SIGINT: KeyboardInterrupt, SIGTERM: terminate).
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def pending(self, world_size: int, device: torch.device, sync_step: bool) -> int:
        """The signal to stop for after this step (0: go on).

        Under torchrun all ranks must stop after the same step (the checkpoint
        is collective), so they agree by a one-number all_reduce on logging and
        checkpoint steps only (``sync_step``), where the loop synchronises anyway:
        a signal acts within ``run.log_every`` steps. A single process acts after
        the current step.
        """
        if world_size == 1:
            return self.received
        if not sync_step:
            return 0
        flag = torch.tensor([self.received], dtype=torch.long, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    return signal.Signals(signum).name
