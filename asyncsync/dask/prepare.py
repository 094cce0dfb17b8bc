"""``prepare`` on a Dask cluster: the same parts and manifest as the local engine.

Four steps, all but the last on the cluster's workers:

1. **hash**: each piece of input (a block of whole lines of a text file, read by
   :func:`dask.bytes.read_bytes`; a partition of a Parquet or CSV column, read by
   :mod:`dask.dataframe`; a partition of a DataFrame handed in) goes through the local engine's
   chunk hasher. It gives the piece's counts and its binary digests, as numeric columns.
2. **shuffle**: Dask's shuffle (P2P by default) moves every digest to the partition owning its
   range of the digest space: ``ranges`` contiguous ranges of the first 32 bits, so equal digests
   meet in one partition and the partitions, in order, are the digest space in order.
3. **dedupe**: each range is sorted and made unique by the local engine's ``sort_unique`` and
   written to a run file in a hidden directory of ``out_dir``; the task returns its counts.
4. **parts**: with every range's unique count known, the client knows each range's global row
   offset and cuts the sorted unique stream exactly where the local engine cuts it: part ``k``
   is rows ``[k*R, (k+1)*R)``, written (hex lines, MD5 while writing, renamed when complete) by a
   worker with the local engine's ``write_part``. The client writes ``manifest.json`` last.

Parts are therefore byte-identical to the local ``prepare`` of the same input and options
(names, bytes, MD5), and the manifest holds the same row counts.

``out_dir`` is either a directory every worker and the client see at the same path (a shared
file system), or a prefix in object storage (``s3://bucket/prefix/``, ``gs://``, ``az://``),
written through fsspec with the credentials each process finds in its environment (none is in
a task, a message or the manifest; a URL with user info or a query is refused). In object
storage, object stores having no atomic rename, a worker streams each part (MD5 computed while
writing) to a temporary object unique to its attempt, copies it to the part's name only once it
is complete, and deletes the temporary: a reader never sees a partial part under its final name.
The client removes what a killed attempt left (temporaries) and, last, writes ``manifest.json``
with one PUT. The sorted runs of the ranges are objects under a hidden prefix of ``out_dir``
(removed at the end; the next run removes what a crashed one left); the shuffle's spill stays on
each worker's local disk. Inputs may be local paths on a shared file system or fsspec URLs the
workers can read.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import dask
import dask.dataframe as dd
from dask.bytes import read_bytes
from dask.delayed import Delayed, delayed
from fsspec.core import has_magic, url_to_fs
from fsspec.utils import infer_compression

from asyncsync.dask.tasks import (
    KEY,
    KEY_SPACE,
    HashSettings,
    PieceStats,
    empty_digest_frame,
    hash_column_piece,
    hash_text_piece,
    piece_frame,
    piece_stats,
    run_name,
    write_part_to_store,
    write_run,
)
from asyncsync.errors import AsyncSyncError, InputError, NoValidIdsError, OutputError, UsageError
from asyncsync.locations import PARQUET_SUFFIXES
from asyncsync.pipeline.parts import (
    PART_GLOB,
    TMP_SUFFIX,
    PartInfo,
    PartSource,
    rows_per_part,
    write_json_atomic,
    write_part,
)
from asyncsync.pipeline.prepare import (
    MANIFEST_NAME,
    SPILL_PREFIX,
    PrepareOptions,
    PrepareResult,
    RejectedLine,
)
from asyncsync.remote import display_name, filesystem, is_remote
from asyncsync.rules.hashing import REASONS
from asyncsync.rules.limits import DEFAULT_MAX_FILE_BYTES, HashAlgo, IdType

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_RANGE_ROWS", "prepare"]

MiB: Final = 1024 * 1024
DEFAULT_CHUNK_BYTES: Final = 8 * MiB
"""Bytes of an uncompressed text input per hashing task."""
DEFAULT_RANGE_ROWS: Final = 1_000_000
"""Valid rows (duplicates included) one digest range is sized for, when ``ranges`` is not given."""

_MIN_LINE_BYTES: Final = {
    # The shortest line that can hold a valid ID of each kind, its line end included: bytes of
    # text divided by this bound the number of valid rows from above.
    IdType.AUTO: 37,
    IdType.MAID: 37,
    IdType.SHA256: 65,
    IdType.MD5: 33,
    IdType.EMAIL: 6,
    IdType.PHONE: 8,
}
_COMPRESSION_GUESS: Final = 10
"""Assumed expansion of a compressed text input, for sizing ranges only."""


@dataclass(frozen=True, slots=True)
class _Piece:
    """One hashing task: which input it belongs to, and its position there."""

    input_index: int
    name: str
    piece: int  # position among all pieces: unique, in input order
    task: Delayed
    header_lines: int = 0  # physical lines before the first row (a CSV header)


@dataclass(frozen=True, slots=True)
class _Plan:
    pieces: list[_Piece]
    names: list[str]
    estimated_rows: int | None
    """An upper bound of the valid rows, or None when the inputs do not tell."""


def _is_dataframe(obj: object) -> bool:
    return isinstance(obj, dd.DataFrame | dd.Series)


def _column_of(frame: Any, column: str | int | None) -> Any:
    if isinstance(frame, dd.Series):
        return frame
    if column is None:
        if len(frame.columns) != 1:
            raise UsageError(
                f"column= is required for a DataFrame of {len(frame.columns)} columns "
                f"({', '.join(map(str, frame.columns[:20]))})"
            )
        return frame[frame.columns[0]]
    if isinstance(column, int):
        if column > len(frame.columns):
            raise UsageError(f"column {column} is past the {len(frame.columns)} column(s)")
        return frame[frame.columns[column - 1]]
    if column not in frame.columns:
        shown = ", ".join(repr(str(c)) for c in frame.columns[:20])
        raise InputError(f"no column {column!r} (columns: {shown})")
    return frame[column]


def _frame_pieces(
    frame: Any,
    input_index: int,
    name: str,
    settings: HashSettings,
    first: int,
    header_lines: int = 0,
) -> list[_Piece]:
    return [
        _Piece(
            input_index,
            name,
            seq,
            delayed(hash_column_piece, pure=True)(part, None, input_index, seq, settings),
            header_lines,
        )
        for seq, part in enumerate(frame.to_delayed(), start=first)
    ]


def _parquet_rows(fs: Any, path: str) -> int | None:
    """Rows of a Parquet file, glob or dataset, from its footers (no data page is read);
    None when they cannot be counted that way."""
    import pyarrow.dataset as pads

    try:
        source: str | list[str] = fs.glob(path) if has_magic(path) else path
        return int(pads.dataset(source, filesystem=fs, format="parquet").count_rows())
    except (OSError, ValueError, TypeError):
        return None


def _is_parquet(fs: Any, path: str) -> bool:
    return path.lower().endswith(PARQUET_SUFFIXES) or bool(fs.isdir(path))


def _plan_paths(
    inputs: Sequence[str], opts: PrepareOptions, settings: HashSettings, chunk_bytes: int
) -> _Plan:
    pieces: list[_Piece] = []
    names: list[str] = []
    estimated: int | None = 0
    min_line = _MIN_LINE_BYTES[opts.id_type]
    for index, name in enumerate(inputs):
        names.append(name)
        if name == "-":
            raise UsageError("stdin (-) cannot be read by a Dask cluster; pass files or URLs")
        fs, path = url_to_fs(name)
        if _is_parquet(fs, path) and not fs.exists(path) and not fs.glob(path):
            raise InputError(f"{name}: no such file", path=name)
        if _is_parquet(fs, path):
            frame = dd.read_parquet(name)
            column = _column_of(frame, opts.column)
            pieces += _frame_pieces(column, index, name, settings, len(pieces))
            rows = _parquet_rows(fs, path)
            estimated = None if rows is None or estimated is None else estimated + rows
            continue
        if opts.column is not None:
            frame = dd.read_csv(
                name,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=False,
                blocksize=chunk_bytes,
                sample=256 * 1024,
                encoding_errors="surrogateescape",
            )
            column = _column_of(frame, opts.column)
            pieces += _frame_pieces(column, index, name, settings, len(pieces), header_lines=1)
            sizes = [fs.size(p) for p in fs.expand_path(path)]
            if estimated is not None:  # a valid row's line holds at least its ID
                estimated += sum(sizes) // min_line + 1
            continue
        try:
            compression = infer_compression(path)
            _, blocks, paths = read_bytes(
                name,
                delimiter=b"\n",
                blocksize=None if compression else chunk_bytes,
                sample=False,
                compression="infer",
                include_path=True,
            )
        except FileNotFoundError:
            raise InputError(f"{name}: no such file", path=name) from None
        except OSError as exc:
            raise InputError(f"{name}: cannot read ({exc})", path=name) from None
        for file_blocks, file_path in zip(blocks, paths, strict=True):
            file_name = name if len(paths) == 1 else str(file_path)
            size = int(fs.size(file_path))
            if estimated is not None:
                estimated += size * (_COMPRESSION_GUESS if compression else 1) // min_line + 1
            for i, block in enumerate(file_blocks):
                seq = len(pieces)
                task = delayed(hash_text_piece, pure=True)(block, i == 0, index, seq, settings)
                pieces.append(_Piece(index, file_name, seq, task))
    return _Plan(pieces, names, estimated)


def _ranges_for(plan: _Plan, range_rows: int, workers: int) -> int:
    """Enough ranges for about ``range_rows`` valid rows each when the input's size bounds its
    rows; one per input partition when it does not (a DataFrame handed in)."""
    if plan.estimated_rows is not None:
        return max(workers, -(-plan.estimated_rows // range_rows))
    return max(workers, len(plan.pieces))


def _divisions(ranges: int) -> list[int]:
    """Split points of the 32-bit key space into ``ranges`` equal contiguous ranges."""
    return [i * KEY_SPACE // ranges for i in range(ranges)] + [KEY_SPACE - 1]


def _clean_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and remove what an earlier run left there, manifest first (the
    same names the local engine removes)."""
    out_dir = out_dir.absolute()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        for path in [*out_dir.glob(PART_GLOB), *out_dir.glob(PART_GLOB + TMP_SUFFIX)]:
            path.unlink(missing_ok=True)
        for spill in out_dir.glob(SPILL_PREFIX + "*"):
            shutil.rmtree(spill, ignore_errors=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"{out_dir}: cannot write the output directory ({reason})") from None
    return out_dir


class _LocalOut:
    """``out_dir`` on a file system every worker and the client share at the same path."""

    def __init__(self, out_dir: Path) -> None:
        self.root = _clean_out_dir(out_dir)
        self.shown = str(self.root)
        try:
            self.run_dir = tempfile.mkdtemp(prefix=SPILL_PREFIX + "dask-", dir=self.root)
        except OSError as exc:
            raise OutputError(
                f"{self.root}: cannot write temporary files ({exc.strerror})"
            ) from None

    def submit_part(
        self, client: Client, index: int, sources: list[PartSource], size: int, fsync: bool
    ) -> Any:
        return client.submit(write_part, index, sources, size, str(self.root), fsync, pure=False)

    def write_manifest(self, result: PrepareResult) -> None:
        write_json_atomic(result.manifest_path, result.to_manifest())

    def remove_temporaries(self) -> None:
        for path in self.root.glob(PART_GLOB + TMP_SUFFIX):
            path.unlink(missing_ok=True)

    def remove_runs(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


class _StoreOut:
    """``out_dir`` in object storage (``s3://bucket/prefix/``, ``gs://``, ``az://``): parts are
    written by the workers through fsspec, the manifest by the client, last. The sorted runs of
    the digest ranges go to a hidden prefix beside the parts (the worker writing a part reads
    runs other workers wrote, and a restarted worker's local disk is gone), removed at the end;
    the shuffle's own spill stays on each worker's local disk."""

    @staticmethod
    def check(url: str) -> str:
        """``url`` without a trailing slash; ``UsageError`` if it carries user info or a query
        (they may be credentials, which would then travel in every task)."""
        shown = display_name(url).rstrip("/")
        if shown != url.rstrip("/"):
            raise UsageError(
                f"{shown}: the out_dir URL carries user info or a query; give the store's "
                "credentials through its standard places (environment, profile, role) instead"
            )
        return shown

    def __init__(self, url: str) -> None:
        self.shown = self.check(url)
        self.url = url.rstrip("/")
        self.fs, path = filesystem(self.url)
        self.path = str(path).rstrip("/")
        self.root = Path(self.path)
        self.run_dir = f"{self.url}/{SPILL_PREFIX}dask-{uuid.uuid4().hex[:12]}"
        try:
            self._remove_left_overs(manifest=True)
        except OSError as exc:
            raise OutputError(f"{self.shown}: cannot write the output prefix ({exc})") from None

    def _list(self) -> list[str]:
        self.fs.invalidate_cache(self.path)
        try:
            return [str(p) for p in self.fs.ls(self.path, detail=False)]
        except FileNotFoundError:
            return []

    def _remove_left_overs(self, *, manifest: bool, parts: bool = True) -> None:
        """Remove the manifest first, then parts, temporaries and runs an earlier run left."""
        if manifest:
            try:
                self.fs.rm_file(f"{self.path}/{MANIFEST_NAME}")
            except FileNotFoundError:
                pass
        doomed = []
        for key in self._list():
            name = key.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("part-") and TMP_SUFFIX in name:
                doomed.append(key)
            elif parts and fnmatch.fnmatch(name, PART_GLOB):
                doomed.append(key)
            elif name.startswith(SPILL_PREFIX):
                doomed.append(key)
        for key in doomed:
            self.fs.rm(key, recursive=True)

    def submit_part(
        self, client: Client, index: int, sources: list[PartSource], size: int, fsync: bool
    ) -> Any:
        return client.submit(write_part_to_store, index, sources, size, self.url, pure=False)

    def write_manifest(self, result: PrepareResult) -> None:
        data = json.dumps(result.to_manifest(), indent=2, sort_keys=True) + "\n"
        self.fs.pipe_file(f"{self.path}/{MANIFEST_NAME}", data.encode())  # one PUT: whole

    def remove_temporaries(self) -> None:
        self._remove_left_overs(manifest=False, parts=False)

    def remove_runs(self) -> None:
        try:
            self.fs.rm(self.run_dir, recursive=True)
        except FileNotFoundError:
            pass


@dataclass(frozen=True, slots=True)
class _Hashed:
    stats: list[PieceStats]
    runs: list[tuple[int, int, int]]  # (range, rows loaded, unique)


def _collect(runs: list[Any], stats: list[PieceStats]) -> _Hashed:
    rows: list[tuple[int, int, int]] = []
    for frame in runs:
        rows.extend((int(r), int(n), int(u)) for r, n, u in frame.itertuples(index=False))
    return _Hashed(stats=list(stats), runs=sorted(rows))


def _sample(plan: _Plan, stats: list[PieceStats], cap: int) -> tuple[RejectedLine, ...]:
    """Rejected lines with their line numbers in their input, in input order (as the local
    engine numbers them: line ends before the piece, or rows before it for a column)."""
    by_piece = {s.piece: s for s in stats}
    out: list[RejectedLine] = []
    before: dict[tuple[int, str], int] = {}
    for piece in plan.pieces:
        s = by_piece[piece.piece]
        key = (piece.input_index, piece.name)
        base = before.get(key, piece.header_lines)
        before[key] = base + (s.newlines if s.newlines or s.rows == 0 else s.rows)
        for i, reason in s.sample:
            if len(out) < cap:
                out.append(RejectedLine(base + i + 1, reason, piece.name))
    return tuple(out)


def _part_plan(
    runs: list[tuple[int, int, int]], run_dir: str, per_part: int
) -> list[list[PartSource]]:
    """Which rows of which run file each part holds: part ``k`` is rows ``[k*R, (k+1)*R)`` of
    the runs concatenated in range order."""
    spans: list[tuple[str, int, int]] = []
    total = 0
    for number, _, unique in runs:
        if unique:
            spans.append((f"{run_dir.rstrip('/')}/{run_name(number)}", total, total + unique))
            total += unique
    parts: list[list[PartSource]] = []
    for first in range(0, total, per_part):
        last = min(first + per_part, total)
        parts.append(
            [
                PartSource(path, max(first, lo) - lo, min(last, hi) - lo)
                for path, lo, hi in spans
                if hi > first and lo < last
            ]
        )
    return parts


def _client(client: Client | str | None) -> tuple[Client, bool]:
    from distributed import Client, default_client

    if isinstance(client, Client):
        return client, False
    if isinstance(client, str):
        try:
            return Client(client), True
        except OSError as exc:
            raise UsageError(f"--dask {client}: cannot reach the scheduler ({exc})") from None
    try:
        return default_client(), False
    except ValueError:
        raise UsageError(
            "no Dask client: pass client= (a distributed.Client or a scheduler address)"
        ) from None


def prepare(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Any,
    *,
    out_dir: str | os.PathLike[str],
    column: str | int | None = None,
    id_type: IdType | str = IdType.AUTO,
    hash: HashAlgo | str | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    client: Client | str | None = None,
    ranges: int | None = None,
    range_rows: int = DEFAULT_RANGE_ROWS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    shuffle_method: str = "p2p",
    sample_cap: int = 100,
    fsync: bool = False,
    default_country: str | None = None,
) -> PrepareResult:
    """Normalize, hash, dedupe and split ``inputs`` into part files on a Dask cluster.

    ``inputs``: a path or URL, a list of them (text, ``.gz``/``.zst`` text, CSV with
    ``column``, Parquet files or dataset directories with ``column``), or a Dask DataFrame /
    Series (``column`` picks the column of a DataFrame; a Series is hashed as is).
    ``column``, ``id_type``, ``hash`` (implied by already hashed input when None),
    ``max_file_bytes`` and ``default_country`` mean what they mean for the local
    :func:`asyncsync.prepare`. ``client``: a ``distributed.Client``, a scheduler address, or
    None for the current default client. ``out_dir``: a directory the client and every worker
    see at the same path, or an object storage URL (``s3://bucket/prefix/``, ``gs://``,
    ``az://``; see the module's notes); for a URL, the result's ``out_dir``, ``manifest_path``
    and parts' ``path`` are the objects' paths within the store (``bucket/prefix/...``), not
    local files.

    Tuning (none changes the output): ``ranges`` digest ranges after the shuffle (default: the
    larger of the worker count and an upper bound of the valid rows over ``range_rows``; the
    bound comes from the inputs' bytes, or from Parquet footers; for a DataFrame handed in, one
    range per partition); ``chunk_bytes`` of uncompressed text per hashing task (a compressed text
    file is one task); ``shuffle_method`` ``"p2p"`` or ``"tasks"``.

    Memory per worker, with T threads, C = ``chunk_bytes`` (or one input partition's bytes),
    D = 32 (SHA256) or 16 (MD5) bytes per digest, Q = valid rows in one range (about valid
    rows / ``ranges``; at most about ``range_rows`` with the default ``ranges``)::

        M0 + T * max(7 * C + (D + 8) * C / L,  (5.5 * D + 16) * Q,  16 MB) + P2P buffers

    where M0 is the worker process with numpy, pandas, pyarrow and Dask loaded (about 150-200
    MB), ``7 * C`` the local engine's chunk hasher at work, ``(D + 8)`` bytes per row of the
    digest frame it hands to the shuffle (L = bytes of the shortest line with a valid ID, 37
    for mobile IDs), ``(5.5 * D + 16) * Q`` a range's dedupe (the shuffled frame, its digest
    matrix and the sort), 16 MB a part being written, and the P2P buffers Dask's own: up to
    ``distributed.p2p.comm.buffer`` (1 GiB by default) of shards waiting to be sent and
    ``distributed.p2p.storage.buffer`` (100 MiB) of received shards waiting for the worker's
    local disk. None of the terms grows with the input's size. With the defaults (C = 8 MiB,
    Q <= 1 M, SHA256, T = 1) the terms before the buffers come to about 400 MB (the dedupe
    of a range dominates; ``range_rows`` moves it). README, "Past one machine", has the
    measured peak.

    Parts are byte-identical to the local ``prepare``'s: same names, rows, bytes and MD5s, and
    the manifest holds the same row counts. Raises ``UsageError`` (bad option, no client),
    ``InputError`` (missing input or column), ``NoValidIdsError`` (no valid line at all),
    ``OutputError`` (``out_dir`` cannot be written); no manifest is left on failure.
    """
    opts = PrepareOptions(
        id_type=id_type,  # type: ignore[arg-type]
        hash_algo=hash,  # type: ignore[arg-type]
        column=column,
        max_file_bytes=max_file_bytes,
        sample_cap=sample_cap,
        default_country=default_country,
    )
    if ranges is not None and (not isinstance(ranges, int) or ranges < 1):
        raise UsageError(f"ranges must be a positive integer, not {ranges!r}")
    if range_rows < 1 or chunk_bytes < 4096:
        raise UsageError("range_rows must be positive and chunk_bytes at least 4096")
    if shuffle_method not in ("p2p", "tasks"):
        raise UsageError(f"shuffle_method {shuffle_method!r}: expected 'p2p' or 'tasks'")
    started = time.perf_counter()
    dask_client, owned = _client(client)
    try:
        return _prepare(
            inputs,
            os.fspath(out_dir),
            opts,
            dask_client,
            ranges,
            range_rows,
            chunk_bytes,
            shuffle_method,
            fsync,
            started,
        )
    finally:
        if owned:
            dask_client.close()


def _prepare(
    inputs: Any,
    out_dir: str,
    opts: PrepareOptions,
    client: Client,
    ranges: int | None,
    range_rows: int,
    chunk_bytes: int,
    shuffle_method: str,
    fsync: bool,
    started: float,
) -> PrepareResult:
    settings = HashSettings(
        id_type=opts.id_type,
        hash_algo=opts.digest,
        digest_size=opts.digest_size,
        sample_cap=opts.sample_cap,
        default_country=opts.default_country,
    )
    if is_remote(out_dir):
        _StoreOut.check(out_dir)
    if _is_dataframe(inputs):
        column = _column_of(inputs, opts.column)
        pieces = _frame_pieces(column, 0, "dataframe", settings, 0)
        plan = _Plan(pieces, [], None)
    else:
        if isinstance(inputs, str | os.PathLike):
            inputs = [inputs]
        names = [os.fspath(x) for x in inputs]
        if not names:
            raise UsageError("no input given (pass one or more files or URLs, or a DataFrame)")
        plan = _plan_paths(names, opts, settings, chunk_bytes)
    if not plan.pieces:
        raise NoValidIdsError(f"{', '.join(plan.names) or 'input'}: no valid ID in 0 lines")
    workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
    n_ranges = ranges or _ranges_for(plan, range_rows, workers)
    out: _LocalOut | _StoreOut = (
        _StoreOut(out_dir) if is_remote(out_dir) else _LocalOut(Path(out_dir))
    )
    try:
        return _run(plan, out, opts, client, n_ranges, shuffle_method, fsync, started)
    except BaseException as exc:
        try:
            out.remove_temporaries()
        except Exception:  # the original error says more than a failed clean-up
            pass
        if isinstance(exc, OSError) and not isinstance(exc, AsyncSyncError):
            raise OutputError(f"{out.shown}: cannot write ({exc.strerror or exc})") from exc
        raise
    finally:
        try:
            out.remove_runs()
        except Exception:  # left under a hidden prefix; the next run into out_dir removes it
            pass


def _run(
    plan: _Plan,
    out: _LocalOut | _StoreOut,
    opts: PrepareOptions,
    client: Client,
    n_ranges: int,
    shuffle_method: str,
    fsync: bool,
    started: float,
) -> PrepareResult:
    size = opts.digest_size
    meta = empty_digest_frame(size)
    frames = dd.from_delayed(
        [delayed(piece_frame, pure=True)(p.task) for p in plan.pieces],
        meta=meta,
        verify_meta=False,
    )
    shuffled = frames.set_index(KEY, divisions=_divisions(n_ranges), shuffle_method=shuffle_method)
    runs = shuffled.map_partitions(
        write_run,
        out.run_dir,
        size,
        meta={"range": "int64", "rows": "int64", "unique": "int64"},
        align_dataframes=False,
        enforce_metadata=False,
    )
    stats = [delayed(piece_stats, pure=True)(p.task) for p in plan.pieces]
    with dask.config.set({"dataframe.shuffle.method": shuffle_method}):
        hashed: _Hashed = client.compute(
            delayed(_collect, pure=True)(runs.to_delayed(), stats)
        ).result()
    rows_read = sum(s.rows for s in hashed.stats)
    rows_valid = sum(s.valid for s in hashed.stats)
    rejected = [sum(s.rejected[i] for s in hashed.stats) for i in range(len(REASONS))]
    if rows_valid == 0:
        names = ", ".join(plan.names) or "input"
        split = ", ".join(f"{r.value} {n}" for r, n in zip(REASONS, rejected, strict=True) if n)
        detail = f" ({split})" if split else ""
        first = plan.names[0] if plan.names else None
        raise NoValidIdsError(f"{names}: no valid ID in {rows_read} lines{detail}", path=first)
    loaded = sum(n for _, n, _ in hashed.runs)
    if loaded != rows_valid:  # a lost or doubled digest would show here
        raise AsyncSyncError(f"shuffle lost digests: {loaded} arrived of {rows_valid} hashed")
    per_part = rows_per_part(opts.max_file_bytes, size)
    plan_parts = _part_plan(hashed.runs, out.run_dir, per_part)
    futures = [
        out.submit_part(client, i, sources, size, fsync)
        for i, sources in enumerate(plan_parts, start=1)
    ]
    parts: list[PartInfo] = client.gather(futures)
    unique = sum(p.rows for p in parts)
    result = PrepareResult(
        out_dir=out.root,
        manifest_path=out.root / MANIFEST_NAME,
        calculate_type=opts.calculate_type,
        parts=tuple(parts),
        rows_read=rows_read,
        rows_valid=rows_valid,
        rows_invalid=sum(rejected),
        rejected={r.value: n for r, n in zip(REASONS, rejected, strict=True)},
        duplicates=rows_valid - unique,
        rows_written=unique,
        rejected_sample=_sample(plan, hashed.stats, opts.sample_cap),
        national_phones=sum(s.national for s in hashed.stats),
        elapsed_s=time.perf_counter() - started,
        inputs=tuple(plan.names),
        options=opts.fingerprint(),
    )
    out.remove_temporaries()  # those of an attempt killed while writing a part
    try:
        out.remove_runs()
    except OSError:  # left under a hidden prefix; the next run into out_dir removes it
        pass
    try:  # last: a manifest means every part it lists is complete
        out.write_manifest(result)
    except OSError as exc:
        where = f"{out.shown}/{MANIFEST_NAME}"
        raise OutputError(f"{where}: cannot write ({exc.strerror or exc})") from None
    return result
