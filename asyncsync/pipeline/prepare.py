"""The prepare stage: inputs in, sorted unique digests out, cut into capped part files.

Three steps, all on one process pool:

1. **hash**: chunks of the inputs (byte ranges of plain files, read by the workers themselves;
   streamed blocks of compressed files, stdin and CSV) are normalized, validated and hashed a
   whole chunk at a time; each chunk's binary digests are spilled to disk bucketed by their
   leading bits (:mod:`asyncsync.pipeline.dedupe`). At most ``chunks_in_flight`` chunks are
   submitted and not yet done (backpressure on the reader).
2. **merge**: runs of buckets are sorted and made unique, each into one file; a file is
   reused for a later run once every part that reads it is written, so at most
   ``2 * chunks_in_flight`` such files exist. The groups are merged in bucket order, so each
   range of buckets' spill files is deleted as soon as the merges are past it.
3. **parts**: part ``k`` is rows ``[k*R, (k+1)*R)`` of the concatenated unique files, hex
   encoded, MD5 computed while written, renamed when complete; parts are handed to ``on_part``
   in index order while later ones are still being produced.

The output depends only on the set of valid IDs and the options of
:meth:`PrepareOptions.fingerprint`: the same input gives the same part names, bytes and MD5s
whatever the worker count, chunk size or timing. ``manifest.json`` is written last, atomically.

:func:`count` is the counting mode (for a dry run): step 1, then step 2 without writing the
unique runs; no part file is written, the parts are planned from the unique count
(:func:`asyncsync.pipeline.parts.plan_parts`), the same as step 3 would cut them.

Stale ``part-*.txt`` (and ``.tmp``) files, ``manifest.json`` and spill directories left in the
output directory by an earlier run are removed before anything is written, so they never mix
with this run's parts. Only those names are touched; other files in the directory stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import numpy as np

from asyncsync.errors import (
    AsyncSyncError,
    NoValidIdsError,
    OutputError,
    StateError,
    UsageError,
    first_error,
)
from asyncsync.events import ChunkHashed, Reporter, StageChanged, null_reporter
from asyncsync.forkserver import pool_context
from asyncsync.locations import is_parquet, is_remote
from asyncsync.pipeline.dedupe import (
    MergeSource,
    count_group,
    group_sources,
    merge_group,
    plan_groups,
    range_path,
    ranges_done,
)
from asyncsync.pipeline.parts import (
    PART_GLOB,
    TMP_SUFFIX,
    DropBehind,
    PartInfo,
    PartSource,
    PlannedPart,
    part_lanes,
    plan_parts,
    rows_per_part,
    write_json_atomic,
    write_parts,
)
from asyncsync.pipeline.source import (
    MAX_RECORD_BYTES,
    InputSpec,
    LineTooLongError,
    iter_jobs,
    open_inputs,
    parse_column,
)
from asyncsync.pipeline.worker import ChunkResult, HashSettings, hash_job, init_worker, ready
from asyncsync.rules.hashing import REASONS, digest_size
from asyncsync.rules.ids import check_default_country
from asyncsync.rules.limits import (
    DEFAULT_MAX_FILE_BYTES,
    MAX_FILE_BYTES,
    CalculateType,
    HashAlgo,
    IdType,
    calculate_type,
)

__all__ = [
    "MANIFEST_NAME",
    "PartInfo",
    "PlannedPart",
    "PrepareCount",
    "PrepareOptions",
    "PrepareResult",
    "RejectedLine",
    "count",
    "prepare",
    "read_manifest",
]

MANIFEST_NAME: Final = "manifest.json"
MANIFEST_VERSION: Final = 1
MiB: Final = 1024 * 1024
SPILL_PREFIX: Final = ".prepare-spill-"
DROP_BEHIND_BYTES: Final = 2 * 1024 * MiB
"""Parts of an output larger than this are dropped from the page cache as they are finished
(``PrepareOptions.drop_behind_bytes``): 10 M IDs make about 0.6 GB of parts, 100 M about 6 GB."""


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    """How ``prepare`` reads, hashes and splits its inputs.

    ``id_type``: what the lines hold (``auto`` means mobile IDs, as ``maid``). ``hash_algo``:
    digest written (email and phone: sha256 only). ``None`` (the default) means implied:
    already hashed input (``sha256``/``md5``) keeps its own hash, anything else gets sha256;
    an explicit ``hash_algo`` that contradicts already hashed input raises ``UsageError``
    naming both options. Once built, ``hash_algo`` holds the digest actually written.
    ``column``: read CSV and take this column: a header name, or a 1-based index (an ``int`` or
    a string of digits); with an index the first record is a header only if its field is no
    valid ID and holds no digit. ``max_file_bytes``: largest part, at most 250 MB.
    ``workers``: processes (default: CPU count). ``default_country``: ISO 3166 alpha-2 region
    of phone numbers written without ``+``/``00`` (``--default-country``; see
    :func:`asyncsync.rules.ids.normalize_phone`).

    Tuning (none of these changes the output): ``chunk_bytes`` of input per chunk (4 KiB to
    64 MiB, the longest line accepted);
    ``chunks_in_flight`` chunks submitted and not done (default ``2 * workers``);
    ``merge_rows`` rows sorted at once by a worker; ``bucket_bits`` (1-16) how finely the digest
    space is split for the merge; ``spill_dir`` where the temporary digest runs go (default: a
    hidden directory inside the output directory); ``sample_cap`` rejected lines kept for the
    report; ``fsync`` parts before renaming them; ``drop_behind_bytes``: when the parts would
    exceed this many bytes (one line per valid ID, before dedupe), each part is written back
    and dropped from the page cache once finished, so that a large output does not grow the
    page cache by its whole size (pushing out the input and the spill the merges still read;
    on a virtual machine, every new page-cache page may cost a fault in the hypervisor:
    benchmarks/README.md); None: never.

    Worst-case memory, with W = workers, C = chunk_bytes, F = chunks_in_flight:
    the parent holds up to F chunks of streamed input (compressed, streams, CSV), about
    ``2 * F * C``, plus, per input being read, one unfinished line of at most 64 MiB (longer lines
    are refused; decompression never produces more than one chunk at a time) (nothing for plain
    files, which the workers read themselves); each worker about ``7 * C``
    while hashing (input, line index, ID matrix, digests, bucketed copy) and about
    ``(3.5 * D + 8) * merge_rows`` while merging (D = 32 bytes per SHA256 digest, 16 for MD5);
    part writing needs about 20 MB per worker; the parent keeps 4 bytes per bucket per chunk
    and 8 per spill range (about 4 KiB per chunk, 1 MB per 10 M rows). Defaults (C = 4 MiB,
    F = 2W, 1 M merge rows): about 150 MB per worker plus 16 MB per worker in the parent for
    streamed inputs, whatever the input size. Dedupe state is on disk: D bytes per valid ID
    (the spill, in 16 files per worker, each deleted once the merges are past its range of
    the digest space), and the unique runs in at most ``2 * F`` reused files of about
    ``D * merge_rows`` bytes each.
    """

    id_type: IdType = IdType.AUTO
    hash_algo: HashAlgo | None = None
    column: str | int | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    workers: int | None = None
    chunk_bytes: int = 4 * MiB
    chunks_in_flight: int | None = None
    merge_rows: int = 1_000_000
    bucket_bits: int = 10
    spill_dir: Path | None = None
    sample_cap: int = 100
    fsync: bool = False
    default_country: str | None = None
    drop_behind_bytes: int | None = DROP_BEHIND_BYTES

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "id_type", IdType(self.id_type))
        except ValueError:
            choices = ", ".join(t.value for t in IdType)
            raise UsageError(f"--id-type {self.id_type!r}: expected one of {choices}") from None
        object.__setattr__(self, "hash_algo", _hash_for(self.id_type, self.hash_algo))
        object.__setattr__(self, "column", parse_column(self.column))
        if self.spill_dir is not None:
            object.__setattr__(self, "spill_dir", Path(self.spill_dir))
        try:
            calculate_type(self.id_type, self.digest)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        line = 2 * self.digest_size + 1
        if not line <= self.max_file_bytes <= MAX_FILE_BYTES:
            raise UsageError(
                f"--max-file-bytes {self.max_file_bytes}: must be between {line} (one line) "
                f"and {MAX_FILE_BYTES}"
            )
        for name, low in (("workers", 1), ("chunks_in_flight", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise UsageError(f"{name} must be an integer >= {low}, not {value!r}")
        if not 4096 <= self.chunk_bytes <= MAX_RECORD_BYTES:
            raise UsageError(
                f"chunk_bytes must be between 4096 and {MAX_RECORD_BYTES}, not {self.chunk_bytes}"
            )
        if self.merge_rows < 1:
            raise UsageError(f"merge_rows must be positive, not {self.merge_rows}")
        if not 1 <= self.bucket_bits <= 16:
            raise UsageError(f"bucket_bits must be between 1 and 16, not {self.bucket_bits}")
        if self.sample_cap < 0:
            raise UsageError(f"sample_cap must not be negative, not {self.sample_cap}")
        limit = self.drop_behind_bytes
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise UsageError(f"drop_behind_bytes must be an integer >= 0 or None, not {limit!r}")
        if self.default_country is not None:
            try:
                region = check_default_country(self.default_country)
            except ValueError as exc:
                raise UsageError(f"--default-country {exc}") from None
            object.__setattr__(self, "default_country", region)

    @property
    def digest(self) -> HashAlgo:
        """The digest written (``hash_algo`` once resolved)."""
        assert self.hash_algo is not None  # resolved by __post_init__
        return self.hash_algo

    @property
    def calculate_type(self) -> CalculateType:
        return calculate_type(self.id_type, self.digest)

    @property
    def digest_size(self) -> int:
        return digest_size(self.id_type, self.digest)

    def resolved_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def fingerprint(self) -> dict[str, object]:
        """The options that change the output bytes (for the sync journal)."""
        kind = IdType.MAID if self.id_type is IdType.AUTO else self.id_type
        out: dict[str, object] = {
            "id_type": kind.value,
            "hash": self.digest.value,
            "column": self.column,
            "max_file_bytes": self.max_file_bytes,
        }
        if self.default_country is not None and kind is IdType.PHONE:
            out["default_country"] = self.default_country
        return out


_HASHED: Final = {IdType.SHA256: HashAlgo.SHA256, IdType.MD5: HashAlgo.MD5}
"""Already hashed input and the hash it carries."""


def _hash_for(id_type: IdType, given: HashAlgo | str | None) -> HashAlgo:
    """The digest to write: ``given``, or the one ``id_type`` implies; ``UsageError`` when an
    explicit ``--hash`` contradicts already hashed input."""
    implied = _HASHED.get(id_type)
    if given is None:
        return implied or HashAlgo.SHA256
    try:
        algo = HashAlgo(given)
    except ValueError:
        raise UsageError(f"--hash {given!r}: expected sha256 or md5") from None
    if implied is not None and algo is not implied:
        raise UsageError(
            f"--id-type {id_type.value} and --hash {algo.value} disagree: {id_type.value} input "
            f"is already hashed with {implied.value} (drop --hash, it is implied)"
        )
    return algo


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """One rejected line of the report: where it is and why."""

    line: int
    reason: str
    input: str

    def to_manifest(self) -> dict[str, object]:
        return {"input": self.input, "line": self.line, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class PrepareResult:
    """What ``prepare`` produced; its fields are the manifest's (see :meth:`to_manifest`).

    Row counts (``docs/normalization.md``, "Counting rows"): ``rows_read`` every data line (a
    CSV header is not one, blank lines are); ``rows_invalid`` the rejected ones, split by reason
    in ``rejected``; ``rows_valid = rows_read - rows_invalid``; ``duplicates`` valid lines whose
    ID was already seen; ``rows_written = rows_valid - duplicates`` (the lines of all parts).
    """

    out_dir: Path
    manifest_path: Path
    calculate_type: CalculateType
    parts: tuple[PartInfo, ...]
    rows_read: int
    rows_valid: int
    rows_invalid: int
    rejected: dict[str, int]
    duplicates: int
    rows_written: int
    rejected_sample: tuple[RejectedLine, ...]
    elapsed_s: float
    inputs: tuple[str, ...] = ()
    options: dict[str, object] = field(default_factory=dict)
    national_phones: int = 0
    """Phone lines among the malformed ones that are national numbers (a single leading 0):
    ``--default-country`` would have read them."""

    @property
    def bytes_written(self) -> int:
        return sum(p.bytes for p in self.parts)

    def to_manifest(self) -> dict[str, object]:
        """The content of ``manifest.json``."""
        return {
            "version": MANIFEST_VERSION,
            "calculate_type": self.calculate_type.value,
            "parts": [p.to_manifest() for p in self.parts],
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "rows_invalid": self.rows_invalid,
            "rejected": dict(self.rejected),
            "duplicates": self.duplicates,
            "rows_written": self.rows_written,
            "bytes_written": self.bytes_written,
            "rejected_sample": [r.to_manifest() for r in self.rejected_sample],
            "elapsed_s": round(self.elapsed_s, 3),
            "inputs": list(self.inputs),
            "options": dict(self.options),
            "national_phones": self.national_phones,
        }


@dataclass(frozen=True, kw_only=True)
class PrepareCount:
    """What :func:`prepare` would produce, counted by :func:`count` without writing a part.

    The counts are :class:`PrepareResult`'s (the same values for the same input and options);
    ``parts`` are planned from ``rows_written`` and ``max_file_bytes``: the same names, rows
    and bytes as the parts :func:`prepare` writes, without their MD5s.
    """

    calculate_type: CalculateType
    parts: tuple[PlannedPart, ...]
    rows_read: int
    rows_valid: int
    rows_invalid: int
    rejected: dict[str, int]
    duplicates: int
    rows_written: int
    rejected_sample: tuple[RejectedLine, ...]
    elapsed_s: float
    national_phones: int = 0
    unique_runs: tuple[Path, ...] = ()
    """With ``unique_dir``: the files of sorted unique binary digests (``digest_size`` bytes
    each) that, concatenated in this order, are the digests the parts would hold."""

    @property
    def bytes_written(self) -> int:
        """The bytes :func:`prepare` would write as parts."""
        return sum(p.bytes for p in self.parts)


def read_manifest(out_dir: str | os.PathLike[str]) -> PrepareResult:
    """The result recorded in ``out_dir/manifest.json``; ``StateError`` if missing or corrupt."""
    root = Path(os.path.abspath(out_dir))
    path = root / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError(f"{path}: no manifest (run prepare first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: unreadable manifest: {exc}") from None
    try:
        parts = tuple(
            PartInfo(
                index=i,
                file=str(p["file"]),
                path=root / str(p["file"]),
                bytes=int(p["bytes"]),
                rows=int(p["rows"]),
                md5=str(p["md5"]),
            )
            for i, p in enumerate(data["parts"], start=1)
        )
        return PrepareResult(
            out_dir=root,
            manifest_path=path,
            calculate_type=CalculateType(data["calculate_type"]),
            parts=parts,
            rows_read=int(data["rows_read"]),
            rows_valid=int(data["rows_valid"]),
            rows_invalid=int(data["rows_invalid"]),
            rejected={str(k): int(v) for k, v in data["rejected"].items()},
            duplicates=int(data["duplicates"]),
            rows_written=int(data["rows_written"]),
            rejected_sample=tuple(
                RejectedLine(int(r["line"]), str(r["reason"]), str(r["input"]))
                for r in data.get("rejected_sample", [])
            ),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
            inputs=tuple(str(x) for x in data.get("inputs", [])),
            options=dict(data.get("options", {})),
            national_phones=int(data.get("national_phones", 0)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"{path}: corrupt manifest ({type(exc).__name__}: {exc})") from None


def _options(options: PrepareOptions | None, option_fields: dict[str, Any]) -> PrepareOptions:
    if options is not None and option_fields:
        raise UsageError("pass either options= or option keywords, not both")
    if options is not None:
        return options
    known = {f.name for f in fields(PrepareOptions)}
    unknown = sorted(set(option_fields) - known)
    if unknown:
        raise UsageError(f"unknown prepare option(s): {', '.join(unknown)}")
    return PrepareOptions(**option_fields)


def _prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and remove what an earlier run left there (manifest first);
    return its absolute path."""
    out_dir = out_dir.absolute()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise PermissionError("permission denied")
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        stale = [*out_dir.glob(PART_GLOB), *out_dir.glob(PART_GLOB + TMP_SUFFIX)]
        for path in stale:
            path.unlink(missing_ok=True)
        for spill in out_dir.glob(SPILL_PREFIX + "*"):  # left by a killed run
            shutil.rmtree(spill, ignore_errors=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"{out_dir}: cannot write the output directory ({reason})") from None
    return out_dir


class _Pool(ProcessPoolExecutor):
    """The hashing pool: forkserver workers that never outlive this process.

    forkserver: workers do not inherit the event loop, its threads or open files; the server
    preloads the hashing modules once (numpy import) for every later pool, and pyarrow's
    Parquet reader too when the command that starts it reads Parquet (``parquet``), so that
    the workers do not each import it (:mod:`asyncsync.forkserver`; the command line
    starts the server before its own imports). Each worker gets the
    read end of a pipe whose write end only this process holds, and exits when it reaches
    end-of-file: when the pool is shut down, or when this process dies, even by SIGKILL (see
    :func:`asyncsync.pipeline.worker.init_worker`).
    """

    def __init__(self, workers: int, parquet: bool = False) -> None:
        ctx = pool_context(parquet)
        self._lifeline, self._lifeline_end = ctx.Pipe(duplex=False)
        super().__init__(
            max_workers=workers,
            mp_context=ctx,
            initializer=init_worker,
            initargs=(self._lifeline, parquet),
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            # Every worker has exited: nothing needs the pipe any more. (Without waiting, the
            # pipe closes when the pool is collected, ending any worker still running.)
            self._lifeline_end.close()
            self._lifeline.close()


class _Stats:
    """Results of the hash step, by chunk."""

    def __init__(self, specs: list[InputSpec]) -> None:
        self.specs = specs
        self.chunks: dict[int, ChunkResult] = {}

    def ordered(self) -> list[ChunkResult]:
        return [self.chunks[s] for s in sorted(self.chunks)]

    def totals(self) -> tuple[int, int, list[int]]:
        rows = sum(c.rows for c in self.chunks.values())
        valid = sum(c.valid for c in self.chunks.values())
        rejected = [sum(c.rejected[i] for c in self.chunks.values()) for i in range(3)]
        return rows, valid, rejected

    def lines_before(self, input_index: int, seq: int) -> int:
        """Line ends of input ``input_index`` in its chunks before chunk ``seq``."""
        return sum(
            c.newlines for c in self.chunks.values() if c.input_index == input_index and c.seq < seq
        )

    def sample(self, cap: int) -> tuple[RejectedLine, ...]:
        out: list[RejectedLine] = []
        lines_before: dict[int, int] = {}
        for chunk in self.ordered():
            base = lines_before.get(chunk.input_index, 0)
            lines_before[chunk.input_index] = base + chunk.newlines
            name = self.specs[chunk.input_index].name
            for line, reason in chunk.sample:
                if len(out) < cap:
                    out.append(RejectedLine(base + line, reason, name))
        return tuple(out)


async def _hash_step(
    starting: asyncio.Future[ProcessPoolExecutor],
    specs: list[InputSpec],
    opts: PrepareOptions,
    settings: HashSettings,
    reporter: Reporter,
) -> _Stats:
    loop = asyncio.get_running_loop()
    stats = _Stats(specs)
    in_flight = opts.chunks_in_flight or 2 * opts.resolved_workers()
    permits = asyncio.Semaphore(in_flight)
    pending: set[asyncio.Future[ChunkResult]] = set()
    failed: list[tuple[int, BaseException]] = []  # (chunk seq, error)
    sizes = [s.size for s in specs]
    total = None if any(not s.ranged for s in specs) else sum(x or 0 for x in sizes)
    bytes_done = 0

    def done(seq: int, fut: asyncio.Future[ChunkResult]) -> None:
        nonlocal bytes_done
        permits.release()
        pending.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            failed.append((seq, exc))
            return
        res = fut.result()
        stats.chunks[res.seq] = res
        bytes_done += res.bytes_read
        reporter(ChunkHashed(rows=res.rows, bytes_read=bytes_done, total_bytes=total))

    # Until the pool is up, the parent hashes chunks itself, one at a time on a thread.
    on_thread: asyncio.Future[ChunkResult] | None = None

    jobs = aclosing(iter_jobs(specs, opts.chunk_bytes))
    try:
        async with jobs as chunks:
            async for job in chunks:
                await permits.acquire()
                if failed:
                    permits.release()
                    break
                while not starting.done() and on_thread is not None and not on_thread.done():
                    waiting: set[asyncio.Future[Any]] = {starting, on_thread}
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if starting.done():
                    fut = loop.run_in_executor(starting.result(), hash_job, job, settings)
                else:
                    fut = on_thread = loop.run_in_executor(None, hash_job, job, settings)
                fut.add_done_callback(functools.partial(done, job.seq))
                pending.add(fut)
    except LineTooLongError as too_long:
        if too_long.line is not None:
            raise
        failed.append((too_long.seq, too_long))  # a streamed input's reader: numbered below
    await asyncio.gather(*pending, return_exceptions=True)
    if failed:
        # The first error in input order; every chunk before it has been hashed by now.
        _, exc = min(failed, key=lambda f: f[0])
        if isinstance(exc, LineTooLongError) and exc.line is None:
            exc = exc.numbered(stats.lines_before(exc.input_index, exc.seq))
        raise exc
    return stats


async def _merge_and_write(
    pool: Executor,
    stats: _Stats,
    opts: PrepareOptions,
    spill: Path,
    out_dir: Path,
    reporter: Reporter,
    on_part: Callable[[PartInfo], Awaitable[None]] | None,
) -> tuple[int, list[PartInfo]]:
    loop = asyncio.get_running_loop()
    size = opts.digest_size
    chunks = [c for c in stats.ordered() if c.valid]
    groups = _groups(chunks, opts)
    per_part = rows_per_part(opts.max_file_bytes, size)
    permits = asyncio.Semaphore(opts.chunks_in_flight or 2 * opts.resolved_workers())
    # (unique run's file, its merge, the group's last bucket + 1), in bucket order
    merge_q: asyncio.Queue[tuple[str, asyncio.Future[tuple[int, int]], int] | None] = (
        asyncio.Queue()
    )
    part_q: asyncio.Queue[asyncio.Future[list[PartInfo]] | None] = asyncio.Queue()
    ready: list[tuple[int, list[PartSource]]] = []  # parts planned, not yet handed to the pool
    ready_changed = asyncio.Condition()
    ready_done = False  # every part is planned
    lanes = part_lanes()
    parts: list[PartInfo] = []
    unique_total = 0
    runs: list[tuple[str, int, int]] = []  # unique runs: (path, first global row, last row)
    slots = _RunSlots(spill, keep=2 * (opts.chunks_in_flight or 2 * opts.resolved_workers()))
    spill_free = _SpillFreer(chunks, opts.bucket_bits)
    freeing: asyncio.Future[None] | None = None  # the spill's deletion, once every group is merged

    def release(_: object) -> None:
        permits.release()

    async def submit_merges() -> None:
        for (_, last), sources in zip(groups, _merge_sources(chunks, groups, opts), strict=True):
            out_path = await slots.take()
            await permits.acquire()
            fut = loop.run_in_executor(pool, merge_group, sources, size, out_path, True)
            fut.add_done_callback(release)
            fut.add_done_callback(_observe)
            merge_q.put_nowait((out_path, fut, last))
        merge_q.put_nowait(None)

    async def plan_parts() -> None:
        """Count each merge's unique rows and queue every part they complete (``ready``)."""
        nonlocal unique_total, ready_done
        index, next_row = 1, 0

        async def queue(last_row: int) -> None:
            nonlocal index, next_row
            sources = [
                PartSource(path, max(next_row, lo) - lo, min(last_row, hi) - lo)
                for path, lo, hi in runs
                if hi > next_row and lo < last_row
            ]
            slots.part_submitted()
            async with ready_changed:
                ready.append((index, sources))
                ready_changed.notify_all()
            index, next_row = index + 1, last_row

        while (merged := await merge_q.get()) is not None:
            path, fut, last_bucket = merged
            _, unique = await fut
            lo = unique_total
            unique_total += unique
            runs.append((path, lo, unique_total))
            while unique_total - next_row >= per_part:
                await queue(next_row + per_part)
            await slots.merge_counted()
            # Every group up to this one is merged (they are counted in order): the spill
            # ranges before its last bucket are read by no later merge. Free their disk space
            # and page cache while the rest merge: at 100 M rows the spill is about 3 GB, and
            # deleting it at the end waited seconds on a file system that discards freed
            # blocks at once (benchmarks/README.md).
            spill_free.upto(ranges_done(last_bucket, opts.bucket_bits))
        # Parts collected from now on are handed out once the spill is gone.
        nonlocal freeing
        freeing = spill_free.upto(None)
        try:
            if unique_total > next_row:
                await queue(unique_total)
            async with ready_changed:
                ready_done = True
                ready_changed.notify_all()
        finally:
            await freeing

    async def submit_parts() -> None:
        """Hand the queued parts to the pool, as many together as have queued up (at most
        ``lanes``: their MD5s are computed side by side, see ``write_parts``) while waiting
        for a place in the pool; the last ones spread over the workers."""
        share: int | None = None
        while True:
            async with ready_changed:
                await ready_changed.wait_for(lambda: bool(ready) or ready_done)
                if not ready:
                    break
            await permits.acquire()
            if ready_done and share is None:  # no part comes after these: share them out
                share = min(lanes, -(-len(ready) // opts.resolved_workers()))
            take = lanes if share is None else share
            batch, ready[:take] = ready[:take], []
            fut = loop.run_in_executor(pool, write_parts, batch, size, str(out_dir), opts.fsync)
            fut.add_done_callback(_observe)
            part_q.put_nowait(fut)
        part_q.put_nowait(None)

    async def collect_parts() -> None:
        rows_done = 0
        while (fut := await part_q.get()) is not None:
            try:
                infos = await fut
            finally:
                permits.release()
            if freeing is not None:
                await freeing
            for info in infos:
                parts.append(info)
                # Parts finish in index order here: a unique run wholly before the rows of
                # the parts written so far is read by no later part, so its file takes a
                # later run.
                rows_done += info.rows
                read = [path for path, _, hi in runs if hi <= rows_done]
                del runs[: len(read)]
                await slots.part_done(read)
                reporter(info.written())
                if on_part is not None:
                    await on_part(info)
                if dropper is not None:
                    dropper.add(info.path)

    limit = opts.drop_behind_bytes
    large = limit is not None and sum(c.valid for c in chunks) * (2 * size + 1) > limit
    dropper = DropBehind() if large and hasattr(os, "posix_fadvise") else None
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(submit_merges())
            tg.create_task(plan_parts())
            tg.create_task(submit_parts())
            tg.create_task(collect_parts())
    except BaseExceptionGroup as group:
        raise first_error(group) from group
    finally:
        if dropper is not None:
            dropper.close()
    return unique_total, parts


class _RunSlots:
    """The files the unique runs of :func:`_merge_and_write` are written to, each reused by a
    later run once no part still to be written reads it.

    A run written over a file whose pages are still in the page cache costs the kernel no new
    pages and no block allocation (nor, on a virtual machine whose memory the host backs on
    first touch, a fault per page); at 100 M rows fresh files would add 3 GB of dirty pages
    that the kernel may start writing to disk only for them to be deleted.

    A merge waits for a free file while ``keep`` files exist, unless nothing could free one:
    no part is in flight and every merge already started has been counted (so the next part
    needs more merges first, as when a part spans more than ``keep`` runs of few unique rows
    each). Then it takes a new file, so waiting never stalls the merges the next part needs.
    """

    def __init__(self, spill: Path, keep: int) -> None:
        self._spill = spill
        self._keep = keep
        self._made = 0
        self._free: list[str] = []
        self._changed = asyncio.Condition()
        self._parts = 0  # parts submitted, not yet collected
        self._merges = 0  # merges given a file, not yet counted by the part submitter

    def _may_take(self) -> bool:
        stuck = not self._parts and not self._merges
        return bool(self._free) or self._made < self._keep or stuck

    async def take(self) -> str:
        """A file for the next merge's unique run."""
        async with self._changed:
            await self._changed.wait_for(self._may_take)
            self._merges += 1
            if self._free:
                return self._free.pop()
            self._made += 1
            return str(self._spill / f"unique-{self._made:06d}.bin")

    def part_submitted(self) -> None:
        self._parts += 1

    async def merge_counted(self) -> None:
        """A merge's rows are counted and every part they complete is queued (and counted as
        in flight: it will be written, and then free the files it reads)."""
        async with self._changed:
            self._merges -= 1
            self._changed.notify_all()

    async def part_done(self, read: list[str]) -> None:
        """A part is collected; ``read`` are the files no later part reads."""
        async with self._changed:
            self._free.extend(read)
            self._parts -= 1
            self._changed.notify_all()


class _SpillFreer:
    """Deletes the chunks' spill files range after range (:mod:`asyncsync.pipeline.dedupe`),
    one deletion at a time on a thread, in the order asked."""

    def __init__(self, chunks: list[ChunkResult], bits: int) -> None:
        self._stems = sorted({run.stem for c in chunks for run in c.spill})
        self._ranges = ranges_done(1 << bits, bits)
        self._freed = 0
        self._last: asyncio.Future[None] | None = None

    def upto(self, ranges: int | None) -> asyncio.Future[None]:
        """Start deleting the files of the first ``ranges`` ranges (None: all) after the
        deletions already started; the returned future is done when they are deleted."""
        end = self._ranges if ranges is None else min(ranges, self._ranges)
        paths = [range_path(s, r) for r in range(self._freed, end) for s in self._stems]
        self._freed = max(self._freed, end)
        if paths or self._last is None:  # most merges finish no range: nothing to chain
            self._last = asyncio.ensure_future(_unlink_after(self._last, paths))
        return self._last


async def _unlink_after(before: asyncio.Future[None] | None, paths: list[str]) -> None:
    if before is not None:
        await before
    if paths:
        await asyncio.to_thread(_unlink_all, paths)


def _unlink_all(paths: Iterable[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _groups(chunks: list[ChunkResult], opts: PrepareOptions) -> list[tuple[int, int]]:
    """The merge groups: runs of buckets of about ``merge_rows`` rows over all chunks."""
    totals = np.zeros(1 << opts.bucket_bits, dtype=np.int64)
    for c in chunks:
        for run in c.spill:
            totals += run.counts
    return plan_groups(totals, opts.merge_rows)


def _merge_sources(
    chunks: list[ChunkResult], groups: list[tuple[int, int]], opts: PrepareOptions
) -> Iterator[list[MergeSource]]:
    """Where each group's rows are in the chunks' spill files, group after group."""
    runs = [run for c in chunks for run in c.spill]
    return group_sources(runs, groups, opts.digest_size, opts.bucket_bits)


def _observe(fut: asyncio.Future[Any]) -> None:
    """Mark a pool future's error as seen: a failed step reports its first error only."""
    if not fut.cancelled():
        fut.exception()


def _no_valid_ids(specs: Iterable[InputSpec], rows: int, rejected: list[int]) -> NoValidIdsError:
    names = ", ".join(s.name for s in specs)
    split = ", ".join(f"{r.value} {n}" for r, n in zip(REASONS, rejected, strict=True) if n)
    detail = f" ({split})" if split else ""
    first = next(iter(specs)).name
    return NoValidIdsError(f"{names}: no valid ID in {rows} lines{detail}", path=first)


async def prepare(
    *inputs: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    reporter: Reporter = null_reporter,
    on_part: Callable[[PartInfo], Awaitable[None]] | None = None,
    options: PrepareOptions | None = None,
    **option_fields: Any,
) -> PrepareResult:
    """Normalize, hash, dedupe and split ``inputs`` into part files in ``out_dir``.

    ``inputs``: paths of plain, gzip or zstd files (detected from their first bytes), ``"-"``
    for stdin, or any other stream given by name (a pipe, ``/dev/stdin``, a named FIFO: see
    :func:`asyncsync.pipeline.source.is_stream`), read once, front to back. Options:
    ``options=PrepareOptions(...)`` or its fields as keywords (``id_type="email"``,
    ``column="email"``, ``max_file_bytes=...``, ``workers=...``). ``on_part`` is awaited once
    per part, in index order, as soon as that part is final, while later parts are still being
    produced (a slow callback slows production down). Progress goes to ``reporter`` as
    ``StageChanged``, ``ChunkHashed`` and ``PartWritten``.

    Writes ``out_dir/part-00001.txt``... and, last and atomically, ``out_dir/manifest.json``.
    Raises ``UsageError`` (bad option), ``InputError`` (missing, unreadable or binary input,
    unknown CSV column, a line longer than 64 MiB: ``LineTooLongError``, with its line number),
    ``NoValidIdsError`` (no valid line at all), ``OutputError`` (the output directory cannot be
    written); no manifest is left behind on failure.
    """

    opts = _options(options, option_fields)
    started = time.perf_counter()
    names = [os.fspath(x) for x in inputs]
    # The pool starts on a thread (a fresh interpreter and its imports: about half a second),
    # leaving the event loop free; the first chunks are hashed meanwhile (see _hash_step).
    # Inputs looked up over the network are checked while it starts; local ones first (an
    # error in them then costs no pool).
    starting = _start_pool_for(names, opts) if any(is_remote(n) for n in names) else None
    try:
        specs = await asyncio.to_thread(open_inputs, names, opts.column, opts.id_type)
        root = await asyncio.to_thread(_prepare_out_dir, Path(out_dir))
        spill = await asyncio.to_thread(_make_spill_dir, opts.spill_dir or root)
    except BaseException:
        if starting is not None:
            await _shutdown(starting)
        raise
    settings = _hash_settings(opts, spill)
    if starting is None:
        starting = _start_pool_for(names, opts)
    try:
        reporter(StageChanged(stage="prepare", started=True))
        stats = await _hash_step(starting, specs, opts, settings, reporter)
        rows_read, rows_valid, rejected = stats.totals()
        if rows_valid == 0:
            raise _no_valid_ids(specs, rows_read, rejected)
        reporter(StageChanged(stage="merge", started=True))
        pool = await starting
        unique, parts = await _merge_and_write(pool, stats, opts, spill, root, reporter, on_part)
        rows_invalid = sum(rejected)
        result = PrepareResult(
            out_dir=root,
            manifest_path=root / MANIFEST_NAME,
            calculate_type=opts.calculate_type,
            parts=tuple(parts),
            rows_read=rows_read,
            rows_valid=rows_valid,
            rows_invalid=rows_invalid,
            rejected={r.value: n for r, n in zip(REASONS, rejected, strict=True)},
            duplicates=rows_valid - unique,
            rows_written=unique,
            rejected_sample=stats.sample(opts.sample_cap),
            elapsed_s=time.perf_counter() - started,
            inputs=tuple(s.name for s in specs),  # a URL without credentials
            options=opts.fingerprint(),
            national_phones=sum(c.national for c in stats.chunks.values()),
        )
        try:
            await asyncio.to_thread(write_json_atomic, result.manifest_path, result.to_manifest())
        except OSError as exc:
            raise OutputError(
                f"{result.manifest_path}: cannot write ({exc.strerror or exc})"
            ) from None
        reporter(StageChanged(stage="prepare", started=False))
        return result
    except BaseException as exc:
        await asyncio.shield(asyncio.to_thread(_discard_tmp, root))
        if isinstance(exc, OSError) and not isinstance(exc, AsyncSyncError):
            # A worker or this process could not write a spill run or a part (disk full,
            # file size limit, I/O error): the output directory's problem, not a crash.
            raise OutputError(
                f"{root}: cannot write ({exc.strerror or exc}); is the disk full?"
            ) from exc
        raise
    finally:
        await _shutdown(starting)
        await asyncio.to_thread(shutil.rmtree, spill, True)


def _hash_settings(opts: PrepareOptions, spill: Path) -> HashSettings:
    return HashSettings(
        id_type=opts.id_type,
        hash_algo=opts.digest,
        sample_cap=opts.sample_cap,
        bucket_bits=opts.bucket_bits,
        spill_dir=str(spill),
        default_country=opts.default_country,
    )


def _make_spill_dir(parent: Path) -> Path:
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=parent))
    except OSError as exc:
        raise OutputError(
            f"{parent}: cannot write temporary files ({exc.strerror or exc})"
        ) from None


def _discard_tmp(root: Path) -> None:
    for path in [*root.glob(PART_GLOB + TMP_SUFFIX), root / (MANIFEST_NAME + TMP_SUFFIX)]:
        path.unlink(missing_ok=True)


def _start_pool_for(names: list[str], opts: PrepareOptions) -> asyncio.Future[ProcessPoolExecutor]:
    """The pool for ``names``, starting on a thread; its fork server imports pyarrow once when
    an input is Parquet."""
    parquet = any(is_parquet(n) for n in names)
    return asyncio.ensure_future(asyncio.to_thread(_start_pool, opts.resolved_workers(), parquet))


def _start_pool(workers: int, parquet: bool = False) -> ProcessPoolExecutor:
    """A started pool (blocking: run on a thread)."""
    pool = _Pool(workers, parquet)
    try:
        pool.submit(ready).result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool


async def _shutdown(starting: asyncio.Future[ProcessPoolExecutor]) -> None:
    """Shut the pool down once it has started (even when this task is being cancelled)."""
    try:
        pool = await asyncio.shield(starting)
    except asyncio.CancelledError:
        # Cancelled while the pool was still starting: finish the shutdown in the background.
        starting.add_done_callback(_shutdown_later)
        raise
    except Exception:
        return  # it never started
    await asyncio.shield(asyncio.to_thread(pool.shutdown, True, cancel_futures=True))


def _shutdown_later(starting: asyncio.Future[ProcessPoolExecutor]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        starting.result().shutdown(wait=False, cancel_futures=True)


# -- counting mode -----------------------------------------------------------------------------


async def count(
    *inputs: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    reporter: Reporter = null_reporter,
    options: PrepareOptions | None = None,
    unique_dir: str | os.PathLike[str] | None = None,
    **option_fields: Any,
) -> PrepareCount:
    """Count what :func:`prepare` would produce from ``inputs``, without writing a part file.

    The same hashing and the same exact dedupe as :func:`prepare` (so the same counts and
    rejected lines), and the parts planned from the unique count (:class:`PrepareCount`).
    Progress goes to ``reporter`` as ``StageChanged`` and ``ChunkHashed``, never
    ``PartWritten``.

    Disk: the exact dedupe spills every valid ID's binary digest once (``digest_size`` bytes
    per valid line: 32 for SHA256, 16 for MD5; 3.2 GB for 100 M SHA256 IDs) into a hidden
    directory in ``options.spill_dir`` (default: ``work_dir``), removed before this returns or
    raises. Nothing else is written: not the parts (``2 * digest_size + 1`` bytes a row), not a
    manifest, and the unique runs only when ``unique_dir`` is given (a caller that must read the
    sorted digests, as a mirror's dry run does): then ``unique_dir`` receives ``digest_size``
    bytes per unique ID, listed in :attr:`PrepareCount.unique_runs`, and the caller removes
    them. Memory is :class:`PrepareOptions`'s hashing and merging. Raises as :func:`prepare`
    does.
    """
    opts = _options(options, option_fields)
    started = time.perf_counter()
    names = [os.fspath(x) for x in inputs]
    specs = await asyncio.to_thread(open_inputs, names, opts.column, opts.id_type)
    spill = await asyncio.to_thread(_make_spill_dir, opts.spill_dir or Path(work_dir))
    settings = _hash_settings(opts, spill)
    starting = asyncio.ensure_future(asyncio.to_thread(_start_pool, opts.resolved_workers()))
    try:
        reporter(StageChanged(stage="prepare", started=True))
        stats = await _hash_step(starting, specs, opts, settings, reporter)
        rows_read, rows_valid, rejected = stats.totals()
        if rows_valid == 0:
            raise _no_valid_ids(specs, rows_read, rejected)
        reporter(StageChanged(stage="merge", started=True))
        runs_dir = None if unique_dir is None else Path(unique_dir)
        unique, runs = await _count_unique(await starting, stats, opts, runs_dir)
        counted = PrepareCount(
            calculate_type=opts.calculate_type,
            parts=plan_parts(unique, opts.max_file_bytes, opts.digest_size),
            rows_read=rows_read,
            rows_valid=rows_valid,
            rows_invalid=sum(rejected),
            rejected={r.value: n for r, n in zip(REASONS, rejected, strict=True)},
            duplicates=rows_valid - unique,
            rows_written=unique,
            rejected_sample=stats.sample(opts.sample_cap),
            elapsed_s=time.perf_counter() - started,
            national_phones=sum(c.national for c in stats.chunks.values()),
            unique_runs=runs,
        )
        reporter(StageChanged(stage="prepare", started=False))
        return counted
    except OSError as exc:
        if isinstance(exc, AsyncSyncError):
            raise
        raise OutputError(
            f"{spill}: cannot write ({exc.strerror or exc}); is the disk full?"
        ) from exc
    finally:
        await _shutdown(starting)
        await asyncio.to_thread(shutil.rmtree, spill, True)


async def _count_unique(
    pool: Executor, stats: _Stats, opts: PrepareOptions, runs_dir: Path | None
) -> tuple[int, tuple[Path, ...]]:
    """The unique rows of the hashed chunks: each merge group counted on the pool (or, with
    ``runs_dir``, merged into a run file there), at most ``chunks_in_flight`` groups submitted
    and not done. Returns the count and the run files in order."""
    loop = asyncio.get_running_loop()
    chunks = [c for c in stats.ordered() if c.valid]
    permits = asyncio.Semaphore(opts.chunks_in_flight or 2 * opts.resolved_workers())
    size = opts.digest_size
    unique = 0
    runs: list[Path] = []
    if runs_dir is not None:
        await asyncio.to_thread(runs_dir.mkdir, parents=True, exist_ok=True)

    async def one(sources: list[MergeSource], run: Path | None) -> None:
        nonlocal unique
        try:
            if run is None:
                _, n = await loop.run_in_executor(pool, count_group, sources, size)
            else:
                _, n = await loop.run_in_executor(pool, merge_group, sources, size, str(run))
        finally:
            permits.release()
        unique += n

    try:
        async with asyncio.TaskGroup() as tg:
            for g, sources in enumerate(_merge_sources(chunks, _groups(chunks, opts), opts)):
                run = None if runs_dir is None else runs_dir / f"unique-{g:06d}.bin"
                if run is not None:
                    runs.append(run)
                await permits.acquire()
                tg.create_task(one(sources, run))
    except BaseExceptionGroup as group:
        raise first_error(group) from group
    return unique, tuple(runs)
