"""What the process-pool workers run: hash a chunk and spill it, merge a group, write a part.

Top-level functions taking and returning small picklable values; the bulk data (input bytes of
plain files, digests, parts) moves through files, not through the pool's pipes.
"""

from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from asyncsync.pipeline.dedupe import spill_chunk
from asyncsync.pipeline.parquet import ColumnJob, column_lines
from asyncsync.pipeline.source import DataJob, Job, RangeJob, csv_values, read_range
from asyncsync.rules.hashing import hash_chunk, hash_values
from asyncsync.rules.limits import HashAlgo, IdType

__all__ = ["ChunkResult", "HashSettings", "hash_job", "init_worker", "ready"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 512 * 1024 * 1024


def ready() -> int:
    """A no-op job: its result tells that the pool has started."""
    return os.getpid()


def init_worker() -> None:
    """Run once in each pool process: keep freed heap memory for the next chunk.

    Every chunk allocates the same few large numpy arrays; by default glibc maps and unmaps
    each one, and touching fresh pages again costs about a third of the worker's time in the
    kernel. Raising the mmap and trim thresholds lets the heap reuse them (the heap still
    stays within the per-worker bound of ``PrepareOptions``). A no-op without glibc.

    Ctrl-C in a terminal reaches the whole process group: workers ignore SIGINT so that only
    the parent reacts (it cancels the stage and shuts the pool down), without worker tracebacks.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


@dataclass(frozen=True, slots=True)
class HashSettings:
    id_type: IdType
    hash_algo: HashAlgo
    sample_cap: int
    bucket_bits: int
    spill_dir: str
    default_country: str | None = None
    """Region of phone numbers written without ``+``/``00`` (``--default-country``)."""


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What one chunk gave; ``sample`` lines are 1-based within the chunk."""

    seq: int
    input_index: int
    rows: int
    newlines: int
    bytes_read: int
    valid: int
    rejected: tuple[int, int, int]
    sample: tuple[tuple[int, str], ...]
    spill_path: str
    bucket_counts: npt.NDArray[np.int32]
    national: int = 0
    """Phone lines rejected as national numbers (without ``--default-country``)."""


def hash_job(job: Job, settings: HashSettings) -> ChunkResult:
    """Read (or take) the chunk, normalize + validate + hash it, spill its digests by bucket."""
    kw = {
        "id_type": settings.id_type,
        "hash_algo": settings.hash_algo,
        "sample_cap": settings.sample_cap,
        "default_country": settings.default_country,
    }
    if isinstance(job, ColumnJob):
        data = column_lines(job)
        bytes_read = len(data)
    elif isinstance(job, RangeJob):
        data = read_range(job)
        bytes_read = job.end - job.start
    else:
        data = job.data
        bytes_read = len(data)
    if isinstance(job, DataJob) and job.csv is not None:
        values, lines = csv_values(job)
        hashed = hash_values(values, **kw)  # type: ignore[arg-type]
        sample = tuple((lines[i], reason) for i, reason in hashed.sample)
    else:
        hashed = hash_chunk(data, **kw)  # type: ignore[arg-type]
        sample = tuple((i + 1, reason) for i, reason in hashed.sample)
    spill_path = str(Path(settings.spill_dir) / f"chunk-{job.seq:09d}.bin")
    counts = spill_chunk(hashed.digests, hashed.digest_size, settings.bucket_bits, spill_path)
    return ChunkResult(
        seq=job.seq,
        input_index=job.input_index,
        rows=hashed.rows,
        newlines=data.count(b"\n"),
        bytes_read=bytes_read,
        valid=hashed.valid,
        rejected=hashed.rejected,
        sample=sample,
        spill_path=spill_path,
        bucket_counts=counts,
        national=hashed.national,
    )
