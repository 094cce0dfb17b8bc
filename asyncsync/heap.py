"""Keep freed heap memory for reuse instead of handing it back to the OS at once.

By default glibc maps every allocation above a threshold (128 KiB, raised as such blocks are
freed, to 32 MiB at most) on its own and unmaps it when freed, and trims the top of a heap
back to the OS once it is free. A process that allocates the same few large buffers over and
over (a hashing worker's per-chunk arrays, the command's blocks of a streamed input) then
touches fresh pages every time: a page fault and a zeroed page each, which cost about a third
of a worker's time in the kernel, and a tenth of a second of the command's time on a 10 M-row
S3 input (benchmarks/README.md, "Inputs where they live"). Raising both thresholds keeps the
freed memory in the heap for the next buffer; a process still holds no more than its own peak.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Final

__all__ = ["KEEP_BYTES", "keep_freed_memory"]

KEEP_BYTES: Final = 512 * 1024 * 1024
"""Allocations up to this size come from the heap, and a heap keeps this much free at its top."""
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`KEEP_BYTES` for this process (and the
    processes it forks). False, doing nothing, without glibc (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES)
        )
    except (OSError, AttributeError):  # not glibc
        return False
