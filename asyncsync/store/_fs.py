"""File-system primitives of the state directory, one copy each: an exclusive lock on a file and
an atomic whole-file write (its directory fsync is :func:`asyncsync.fsync.fsync_dir`).

The lock is ``flock`` on POSIX and ``msvcrt.locking`` on Windows, both imported when first
used, so importing the package works on either.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from asyncsync.fsync import fsync_dir

__all__ = ["LockHeld", "atomic_write_bytes", "exclusive_lock"]


class LockHeld(Exception):
    """Another process holds the lock (raised only by a non-blocking :func:`exclusive_lock`)."""


def _lock_fd(fd: int, *, blocking: bool) -> None:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        mode = msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK
        try:
            msvcrt.locking(fd, mode, 1)
        except OSError:
            raise LockHeld from None
        return
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        raise LockHeld from None


@contextlib.contextmanager
def exclusive_lock(path: Path, *, blocking: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600 when missing) for the block.

    Raises :class:`LockHeld` when ``blocking`` is false and another process holds it, and
    ``OSError`` when the file cannot be opened. The lock ends with the block or the process.
    """
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        _lock_fd(fd, blocking=blocking)
        yield
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never a
    mix: write a temporary sibling (0600), fsync it, rename it over ``path``, fsync the
    directory. Raises ``OSError``."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
