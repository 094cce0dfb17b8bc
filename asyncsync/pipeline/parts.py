"""Part files: capped, hex digest per line, MD5 computed while writing, renamed when complete.

A part holds ``rows_per_part(max_file_bytes, digest_size)`` digests (the last one fewer), each
written as lowercase hex and ``\\n``: every line has the same length, so the cap is a row count
and part ``k`` is rows ``[k*R, (k+1)*R)`` of the sorted unique stream. The file is written under
``part-NNNNN.txt.tmp`` and renamed only once complete, so a crash never leaves a part that looks
finished; its MD5 is updated with exactly the bytes handed to ``write``.
"""

from __future__ import annotations

import binascii
import contextlib
import ctypes
import hashlib
import json
import os
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np

from asyncsync.events import PartWritten
from asyncsync.rules.engine import Engine, native_for

__all__ = [
    "PART_GLOB",
    "DropBehind",
    "PartInfo",
    "PartSource",
    "PlannedPart",
    "part_lanes",
    "part_lines",
    "part_name",
    "plan_parts",
    "rows_per_part",
    "write_json_atomic",
    "write_part",
    "write_parts",
]

PART_GLOB: Final = "part-*.txt"
TMP_SUFFIX: Final = ".tmp"
_SLICE_ROWS: Final = 1 << 13  # hex lines of a slice stay in cache while MD5 reads them
# (write_parts holds one slice per part, up to 8 x 532 KB for 32-byte digests: L3, not L2)
MAX_LANES: Final = 8
"""Most parts :func:`write_parts` writes side by side (the MD5 lanes of one AVX2 register)."""


@dataclass(frozen=True, kw_only=True)
class PartInfo:
    """One finished part file."""

    index: int
    """1-based position of the part."""
    file: str
    """Name relative to the output directory, e.g. ``part-00001.txt``."""
    path: Path
    """Absolute path."""
    bytes: int
    rows: int
    md5: str
    """Lowercase hex MD5 of the file's bytes, computed while they were written."""

    def to_manifest(self) -> dict[str, object]:
        return {"file": self.file, "bytes": self.bytes, "rows": self.rows, "md5": self.md5}

    def written(self) -> PartWritten:
        """The progress event that says this part is final."""
        return PartWritten(
            index=self.index, path=str(self.path), rows=self.rows, bytes=self.bytes, md5=self.md5
        )


@dataclass(frozen=True, slots=True)
class PartSource:
    """Rows ``[first, last)`` of a file of sorted unique binary digests."""

    path: str
    first: int
    last: int


def part_name(index: int) -> str:
    return f"part-{index:05d}.txt"


def rows_per_part(max_file_bytes: int, digest_size: int) -> int:
    """How many digest lines fit in ``max_file_bytes`` (0 when not even one does)."""
    return max_file_bytes // (2 * digest_size + 1)


@dataclass(frozen=True, slots=True)
class PlannedPart:
    """A part as :func:`plan_parts` foresees it: what :func:`write_part` would write, without
    its MD5 (which only the bytes give)."""

    index: int
    file: str
    rows: int
    bytes: int


def plan_parts(unique_rows: int, max_file_bytes: int, digest_size: int) -> tuple[PlannedPart, ...]:
    """The parts ``unique_rows`` sorted unique digests are cut into: every line has the same
    width, so part ``k`` holds rows ``[k*R, (k+1)*R)`` (R = :func:`rows_per_part`) and its size
    is its rows times the line width."""
    per_part = rows_per_part(max_file_bytes, digest_size)
    if per_part < 1:
        raise ValueError(f"max_file_bytes {max_file_bytes} holds no {2 * digest_size}-hex line")
    line = 2 * digest_size + 1
    return tuple(
        PlannedPart(index=k, file=part_name(k), rows=rows, bytes=rows * line)
        for k, first in enumerate(range(0, unique_rows, per_part), start=1)
        for rows in (min(per_part, unique_rows - first),)
    )


def write_part(
    index: int,
    sources: Sequence[PartSource],
    digest_size: int,
    out_dir: str,
    fsync: bool = False,
    engine: Engine | None = None,
) -> PartInfo:
    """Write part ``index`` from ``sources`` (worker side); returns its final ``PartInfo``.

    Memory: about 4 x 2**13 x digest_size bytes, whatever the part size. ``engine``: who
    hex-encodes (default: the active engine); the bytes are the same.
    """
    name = part_name(index)
    final = Path(out_dir) / name
    tmp = final.with_name(name + TMP_SUFFIX)
    md5 = hashlib.md5()
    written = rows = 0
    with open(tmp, "wb") as out:
        for lines, n in part_lines(sources, digest_size, _open_local, engine):
            md5.update(lines)
            out.write(lines)
            written += n * (2 * digest_size + 1)
            rows += n
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, final)
    return PartInfo(
        index=index, file=name, path=final, bytes=written, rows=rows, md5=md5.hexdigest()
    )


_SYNC_FILE_RANGE_ALL: Final = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER


class DropBehind:
    """Finished files handed to a thread that writes each back to disk and then drops its pages
    from the page cache (``sync_file_range``, then ``POSIX_FADV_DONTNEED``): the pages of one
    part serve the next instead of the page cache growing by a whole large output. Only hints:
    a failure is ignored, the file is whole either way; what is still queued when the process
    ends stays cached. :meth:`close` lets the thread end once the queue is done."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._write_back = _write_back_call()
        self._thread = threading.Thread(target=self._run, name="asyncsync-drop-behind", daemon=True)
        self._thread.start()

    def add(self, path: Path) -> None:
        self._queue.put(str(path))

    def close(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (path := self._queue.get()) is not None:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    self._write_back(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def _write_back_call() -> Callable[[int], object]:
    """Write a file's dirty pages and wait for them: ``sync_file_range`` on Linux (the data
    only, no metadata, no flush of the device's cache), else ``fdatasync``."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            call = ctypes.CDLL(None, use_errno=True).sync_file_range
            call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            return lambda fd: call(fd, 0, 0, _SYNC_FILE_RANGE_ALL)
    return os.fdatasync


def part_lanes(engine: Engine | None = None) -> int:
    """How many parts one :func:`write_parts` call writes side by side at most: 1 unless the
    native engine has the CPU's AVX2 for their MD5s."""
    native = native_for(engine)
    return MAX_LANES if native is not None and native.md5_lanes_simd() else 1


def write_parts(
    batch: Sequence[tuple[int, Sequence[PartSource]]],
    digest_size: int,
    out_dir: str,
    fsync: bool = False,
    engine: Engine | None = None,
) -> list[PartInfo]:
    """Write the parts of ``batch`` (index and sources of each, at most :data:`MAX_LANES`) in
    one call (worker side): the same files and MD5s as :func:`write_part` for each.

    A part's MD5 is one sequential chain (about 600 MB/s a core); with the native engine on a
    CPU with AVX2, the parts' slices are written in turn and their MD5s computed side by side,
    one lane each (about four times the MD5 throughput for eight parts: benchmarks/README.md).
    Otherwise the parts are written one after another with :func:`write_part`.
    """
    if len(batch) > MAX_LANES:
        raise ValueError(f"at most {MAX_LANES} parts at once")
    native = native_for(engine)
    if native is None or len(batch) < 2 or part_lanes(engine) < 2:
        return [write_part(i, src, digest_size, out_dir, fsync, engine) for i, src in batch]
    line = 2 * digest_size + 1
    states = native.md5_lanes(len(batch))
    finals = [Path(out_dir) / part_name(index) for index, _ in batch]
    tmps = [f.with_name(f.name + TMP_SUFFIX) for f in finals]
    rows = [0] * len(batch)
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(open(tmp, "wb")) for tmp in tmps]
        slices: list[Iterator[tuple[bytes | memoryview, int]] | None] = [
            stack.enter_context(
                contextlib.closing(part_lines(src, digest_size, _open_local, engine))
            )
            for _, src in batch
        ]
        live = len(batch)
        while live:
            round_: list[bytes | memoryview] = []
            for lane, it in enumerate(slices):
                got = next(it, None) if it is not None else None
                if got is None:
                    slices[lane] = None
                    round_.append(b"")
                    continue
                lines, n = got
                outs[lane].write(lines)
                rows[lane] += n
                round_.append(lines)
            live = sum(it is not None for it in slices)
            native.md5_lanes_update(states, round_)
        for out in outs:
            if fsync:
                out.flush()
                os.fsync(out.fileno())
    infos = []
    for lane, (index, _) in enumerate(batch):
        os.replace(tmps[lane], finals[lane])
        infos.append(
            PartInfo(
                index=index,
                file=finals[lane].name,
                path=finals[lane],
                bytes=rows[lane] * line,
                rows=rows[lane],
                md5=native.md5_lanes_hexdigest(states, lane),
            )
        )
    return infos


def _open_local(path: str) -> BinaryIO:
    return open(path, "rb")


def part_lines(
    sources: Sequence[PartSource],
    digest_size: int,
    open_source: Callable[[str], BinaryIO],
    engine: Engine | None = None,
) -> Generator[tuple[bytes | memoryview, int], None, None]:
    """The hex lines of a part, a slice of at most 2**13 rows at a time, with their row count.

    ``open_source`` opens a source's file for seeking and reading (a local file, or an
    fsspec file of an object store). Raises ``OSError`` if a source is shorter than its rows.
    """
    native = native_for(engine)
    width = 2 * digest_size
    for src in sources:
        with open_source(src.path) as f:
            for first in range(src.first, src.last, _SLICE_ROWS):
                n = min(_SLICE_ROWS, src.last - first)
                f.seek(first * digest_size)
                raw = f.read(n * digest_size)
                if len(raw) != n * digest_size:
                    raise OSError(f"{src.path}: merged digests shorter than expected")
                lines = (
                    _hex_lines(raw, n, width)
                    if native is None
                    else native.hex_lines(raw, digest_size)
                )
                yield lines, n


def _hex_lines(raw: bytes, n: int, width: int) -> memoryview:
    hexed = np.frombuffer(binascii.hexlify(raw), dtype=np.uint8)
    lines = np.empty((n, width + 1), dtype=np.uint8)
    lines[:, :width] = hexed.reshape(n, width)
    lines[:, width] = 10
    return lines.data


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to a temporary name beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
