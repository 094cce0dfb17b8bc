"""Durable renames: the directory fsync that makes a rename survive a power cut. The one copy,
used by the token file (:mod:`asyncsync.credentials`) and the state directory
(:mod:`asyncsync.store`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where the platform
    cannot open a directory (Windows). Raises ``OSError`` when the flush itself fails."""
    with contextlib.suppress(PermissionError, IsADirectoryError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
