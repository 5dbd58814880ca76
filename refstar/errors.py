"""The library's expected failures. ``refstar`` is a leaf package: the worker re-exports these
(``worker.errors``) and reports them like its own, with the file and the reason."""

from __future__ import annotations


class RefstarError(Exception):
    """Base of the library's expected failures (a model or input it cannot use)."""


class ModelError(RefstarError):
    """A model (face backend, restorer checkpoint, shipped prior) that is missing or unusable."""
