"""Errors that are the user's to fix: the CLI prints them without a traceback and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A bad config, a bad path, a missing plugin: something the user can correct.

    The message must name what is wrong (key path or file), the bad value, and
    what is allowed.
    """

    exit_code = 2


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``word`` (difflib), or None when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or "" when none is close.

    Every "unknown name" message appends this after naming the bad key, so a
    typo is one glance from its fix.
    """
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match is not None else ""


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
