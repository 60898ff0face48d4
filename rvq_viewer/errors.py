"""The one error type users see: a file and what is wrong with it, on one line."""

from __future__ import annotations

from pathlib import Path


class RvqViewerError(Exception):
    """Bad input or a refused operation. `str()` is the one-line message shown to the user."""

    def __init__(self, reason: str, path: str | Path | None = None):
        self.reason = reason
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class LoadError(RvqViewerError):
    """A checkpoint or feature file that cannot be read or understood."""


class UnsafeFileError(LoadError):
    """A pickle that asks to run code or build objects we do not allow."""


class CancelledError(RvqViewerError):
    """A long job stopped because the caller asked it to."""
