"""Errors that are the user's to fix: the CLI prints them without a traceback and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """A bad config, a bad path, a missing plugin: something the user can correct.

    The message must name what is wrong (key path or file), the bad value, and
    what is allowed.
    """

    exit_code = 2


class DataError(UserError):
    """A data file is missing, unreadable or corrupt; the message names the file."""


class TrainingStopped(Exception):
    """Training cannot go on (e.g. non-finite loss); carries the step and last checkpoint."""

    def __init__(self, message: str, step: int, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint

    #: the CLI's exit status
    exit_code = 1


class TrainingInterrupted(TrainingStopped):
    """SIGINT/SIGTERM: the run wrote a checkpoint after the current step and stopped.

    ``exit_code`` is 128 + the signal number (130 for SIGINT, 143 for SIGTERM),
    the shell convention for "ended by this signal"; ``hasten train --resume``
    continues exactly where it stopped.
    """

    def __init__(self, message: str, step: int, checkpoint: str | None, signum: int) -> None:
        super().__init__(message, step, checkpoint)
        self.signum = signum
        self.exit_code = 128 + signum
