"""glibc keeps freed buffers in the heap once told to (``asyncsync/heap.py``): a buffer freed and
allocated again costs no fresh pages. Counted as minor page faults in a fresh interpreter, where
nothing else changed the thresholds before."""

from __future__ import annotations

import subprocess
import sys

import pytest

COUNT = """
import resource
import sys

from asyncsync.heap import keep_freed_memory

if sys.argv[1] == "keep":
    assert keep_freed_memory()


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


before = faults()
for _ in range(20):
    block = b"x" * (40 << 20)  # past glibc's largest default mmap threshold (32 MiB)
    del block
print(faults() - before)
"""


def minor_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", COUNT, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_buffer_is_reused_instead_of_mapped_afresh() -> None:
    pages = 20 * (40 << 20) // 4096  # every block on fresh pages: 204,800 faults
    default, kept = minor_faults("default"), minor_faults("keep")
    assert default > pages // 2, default
    # The first block's pages only (10,240), then the same memory again.
    assert kept < pages // 8, kept
