"""Errors that name the offending file and the reason, so batch reports stay readable."""

from __future__ import annotations

from refstar.errors import ModelError, RefstarError


class WorkerError(Exception):
    """Base of the worker's expected failures (bad input, missing model, bad config)."""


class MediaError(WorkerError):
    """An input file that cannot be read or written: ``file`` and ``reason`` are shown to users."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file = str(file)
        self.reason = reason


class PlacementError(WorkerError):
    """Actors a job needs could not be placed on its cluster in time: the job cannot go on."""


# What a job reports as the item's (or the run's) error line rather than as an internal error.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (WorkerError, RefstarError)

__all__ = ["EXPECTED_ERRORS", "MediaError", "ModelError", "PlacementError", "RefstarError", "WorkerError"]
