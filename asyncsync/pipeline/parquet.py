"""Parquet inputs: one file, a directory of files or a glob, read as one dataset, local or remote.

Only the dataset's one ID column is read (column projection: no other column is decoded), file
after file in path order. A local file whose row groups are of a bounded size
(:data:`ROW_GROUP_BYTES` of the column each) is cut into :class:`RowGroupJob` jobs of a few row
groups (about ``chunk_bytes`` of the column, at least one row group), which the hashing workers
read themselves, as they read byte ranges of a text file: no value goes through the parent.
Other files (remote ones, or files with huge row groups) are read by the parent by record
batches, whose Arrow arrays go to the workers as a :class:`ColumnJob` (they pickle as their raw
buffers, so no value ever becomes a Python object).

A worker reads a :class:`RowGroupJob` as a stream of record batches of at most
:data:`READ_BATCH_ROWS` rows, from the file mapped into memory (pages are decoded in place: a whole
``prepare`` takes about 6 % less CPU than through a read buffer), on one thread (the pool already
runs one worker per core), and hashes each batch as it comes (:func:`column_hashes`); the digests
are spilled every ``run_rows`` rows (about ``chunk_bytes`` of values), as consecutive runs of the
job's spill file. A batch's values are hashed as the same values written one per line would hash:
with the native engine, straight from the array's value buffer through its offsets (int32 or int64)
and validity bitmap, in one call without the GIL (:func:`~asyncsync.rules.hashing.hash_arrow`); with
the Python engine, through the newline-separated bytes :func:`column_lines` builds with Arrow
compute kernels. The digests, counts and rejected rows are exactly those of the same IDs as text. A
null is an empty line (``empty``); a value holding a line end would split into two lines, so it is
``malformed`` for every ID type (the line path writes it as a NUL byte). A rejected row's "line" is
its 1-based row index in the dataset.

Columns of type string, large string, binary, large binary, integers (phone numbers), and
dictionary-encoded variants of these are read; others are refused naming their type.

Memory: the parent holds at most ``chunks_in_flight`` batches of about ``chunk_bytes`` of values
(plus pyarrow's read buffer of :data:`READ_BUFFER_BYTES` and, for a remote file, one fetch block);
a row group is streamed, never loaded whole. A worker holds, whatever the row group size, one
record batch of :data:`READ_BATCH_ROWS` rows and its decoded pages, and the digests of at most
``run_rows`` rows (``digest_size`` bytes each) before they are spilled; or, for a
:class:`ColumnJob`, that job's arrays. The mapped file's pages it has read count in its RSS while
it reads the job; they are the page cache's, shared and reclaimable, not the worker's heap.
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from asyncsync.errors import InputError
from asyncsync.locations import PARQUET_SUFFIXES, has_glob, is_parquet, is_remote
from asyncsync.remote import RemoteObject, display_name, filesystem
from asyncsync.rules.engine import native_for
from asyncsync.rules.hashing import ChunkHashes, digest_size, hash_arrow, hash_chunk

__all__ = [
    "PARQUET_SUFFIXES",
    "ColumnJob",
    "DatasetFile",
    "ParquetInput",
    "RowGroupJob",
    "batch_rows",
    "column_arrays",
    "column_hashes",
    "column_lines",
    "dataset_files",
    "is_parquet",
    "joined_hashes",
]

READ_BUFFER_BYTES: Final = 1 << 20
"""pyarrow reads column chunks through a buffer of this size (a row group is never read whole)."""
READ_BATCH_ROWS: Final = 1 << 15
"""Rows per record batch a worker reads: about 1 MiB of a typical ID column, small enough to
stay in the CPU's cache from decoding to hashing (larger batches cost more CPU)."""
_BATCH_VALUE_BYTES: Final = 40
"""Bytes a value is assumed to take when a batch's row count is chosen from ``chunk_bytes``."""
_MALFORMED: Final = b"\x00"
"""Stands for a value holding a line end: NUL is malformed for every ID type, never empty."""
ROW_GROUP_BYTES: Final = 64 << 20
"""A local file whose row groups each hold at most this many bytes of the ID column
(uncompressed) is read by the workers themselves, a few row groups per job. A row group is the
smallest job a worker reads (a worker's memory does not depend on it), so a file with larger
ones goes through the parent in batches, which every worker then shares."""


@dataclass(frozen=True, slots=True)
class ColumnJob:
    """Values of one batch of a Parquet input's ID column (pyarrow arrays, pickled as buffers)."""

    seq: int
    input_index: int
    name: str
    first_row: int  # rows of this input before the batch
    arrays: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class RowGroupJob:
    """Row groups of one local file of a Parquet input, which the worker reads itself."""

    seq: int
    input_index: int
    name: str  # the input's shown name
    first_row: int  # rows of this input before the job
    file: str  # the file's shown name (errors)
    path: str
    column: str
    row_groups: tuple[int, ...]
    run_rows: int = 1 << 17  # rows the worker hashes before it spills their digests


@dataclass(frozen=True, slots=True)
class DatasetFile:
    """One file of a dataset: its shown name and how to open it."""

    name: str
    local: str | None
    remote: RemoteObject | None

    def open(self) -> Any:
        if self.remote is not None:
            obj = self.remote
            return obj.fs.open(obj.path, "rb", block_size=8 << 20, cache_type="readahead")
        assert self.local is not None
        return open(self.local, "rb")

    def identity(self) -> dict[str, Any]:
        if self.remote is not None:
            return self.remote.identity()
        assert self.local is not None
        st = os.stat(self.local)
        return {"path": self.local, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _local_files(name: str) -> list[DatasetFile]:
    if has_glob(name):
        paths = sorted(p for p in globlib.glob(name, recursive=True) if os.path.isfile(p))
    elif os.path.isdir(name):
        paths = sorted(
            str(p)
            for p in Path(name).rglob("*")
            if p.is_file() and not any(part.startswith((".", "_")) for part in p.parts[-1:])
        )
    elif os.path.exists(name):
        paths = [name]
    else:
        raise InputError(f"{name}: no such file", path=name)
    return [DatasetFile(p, os.path.abspath(p), None) for p in paths]


def _remote_files(url: str) -> list[DatasetFile]:
    fs, path = filesystem(url)
    name = display_name(url)
    scheme = url.split("://", 1)[0]
    try:
        if has_glob(path):
            found = sorted(fs.glob(path))
        elif url.split("?", 1)[0].endswith("/") or fs.isdir(path):
            found = sorted(fs.find(path))
        else:
            return [DatasetFile(name, None, RemoteObject.lookup(url))]
    except InputError:
        raise
    except Exception as exc:  # the backends raise their own types
        raise InputError(f"{name}: cannot list it ({type(exc).__name__})", path=name) from None
    keep = [p for p in found if not os.path.basename(p).startswith((".", "_"))]
    files = []
    for p in keep:
        obj_url = f"{scheme}://{p}" if "://" not in p else p
        files.append(DatasetFile(display_name(obj_url), None, RemoteObject.lookup(obj_url)))
    return files


def dataset_files(name: str) -> tuple[str, list[DatasetFile]]:
    """(shown name, files in path order) of the dataset ``name``; hidden files and files whose
    name starts with ``_`` (``_SUCCESS``, ``.crc``) are skipped. Raises ``InputError``."""
    shown = display_name(name) if is_remote(name) else name
    files = _remote_files(name) if is_remote(name) else _local_files(name)
    if not files:
        what = "is a directory with" if _is_local_dir(name) else "matches"
        raise InputError(f"{shown}: {what} no Parquet file", path=shown)
    return shown, files


def _is_local_dir(name: str) -> bool:
    return not is_remote(name) and os.path.isdir(name)


def _column_index(name: str, names: Sequence[str], column: str | int | None) -> int:
    shown = ", ".join(repr(n) for n in names[:50]) or "none"
    if column is None:
        if len(names) == 1:
            return 0
        raise InputError(
            f"{name}: has {len(names)} columns; pick one with --column (columns: {shown})",
            path=name,
        )
    if isinstance(column, int):
        if not 1 <= column <= len(names):
            raise InputError(
                f"{name}: --column {column} is past its {len(names)} column(s) (columns: {shown})",
                path=name,
            )
        return column - 1
    if column in names:
        return list(names).index(column)
    lowered = [n.casefold() for n in names]
    if column.casefold() in lowered:
        return lowered.index(column.casefold())
    raise InputError(f"{name}: no column {column!r} (columns: {shown})", path=name)


def _check_type(name: str, column: str, arrow_type: Any) -> None:
    import pyarrow as pa

    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    ok = (
        pa.types.is_string(value_type)
        or pa.types.is_large_string(value_type)
        or pa.types.is_binary(value_type)
        or pa.types.is_large_binary(value_type)
        or pa.types.is_integer(value_type)
        or getattr(pa.types, "is_string_view", lambda _t: False)(value_type)
        or getattr(pa.types, "is_binary_view", lambda _t: False)(value_type)
    )
    if not ok:
        raise InputError(
            f"{name}: column {column!r} holds {arrow_type}, not strings, bytes or integers",
            path=name,
        )


@dataclass(frozen=True, slots=True)
class ParquetInput:
    """A Parquet dataset, checked: its files, the ID column, its row count (from the footers)."""

    name: str
    files: tuple[DatasetFile, ...]
    column: str
    rows: int
    size: int

    @classmethod
    def open(cls, name: str, column: str | int | None) -> ParquetInput:
        """Find the dataset's files and read their footers; the column must exist in each.

        Raises ``InputError`` (one line) for a missing input, an empty dataset, a file that is
        not Parquet, or a column that does not exist (naming the columns that do).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        shown, files = dataset_files(name)
        rows = size = 0
        chosen: str | None = None
        for f in files:
            try:
                with f.open() as raw:
                    meta = pq.ParquetFile(raw).metadata
                    schema = meta.schema.to_arrow_schema()
            except (pa.ArrowException, OSError, ValueError) as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if _is_local_dir(name):  # say why a directory was read as Parquet at all
                    raise InputError(
                        f"{name}: is a directory, read as one Parquet dataset, but {f.name} in "
                        f"it is not a readable Parquet file ({text})",
                        path=f.name,
                    ) from None
                raise InputError(
                    f"{f.name}: not a readable Parquet file ({text})", path=f.name
                ) from None
            names = list(schema.names)
            if chosen is None:
                chosen = names[_column_index(f.name, names, column)]
            elif chosen not in names:
                chosen_shown = ", ".join(repr(n) for n in names[:50]) or "none"
                raise InputError(
                    f"{f.name}: no column {chosen!r} (columns: {chosen_shown})", path=f.name
                )
            _check_type(f.name, chosen, schema.field(chosen).type)
            rows += meta.num_rows
            if f.remote is not None:
                size += f.remote.size or 0
            else:
                size += os.path.getsize(f.local or f.name)
        assert chosen is not None
        return cls(name=shown, files=tuple(files), column=chosen, rows=rows, size=size)

    def identity(self) -> list[dict[str, Any]]:
        """What the sync journal records of each file (path, size, mtime or ETag/version)."""
        return [f.identity() for f in self.files]

    def row_group_plan(
        self, f: DatasetFile, chunk_bytes: int
    ) -> list[tuple[tuple[int, ...], int]] | None:
        """How the workers read the local file ``f`` themselves: (row groups, rows) per job,
        about ``chunk_bytes`` of the column each, at least one row group; None when ``f`` is
        remote or a row group holds more than :data:`ROW_GROUP_BYTES` of the column (the parent
        then streams it in batches). Raises ``InputError`` when the footer cannot be read."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if f.local is None:
            return None
        try:
            with f.open() as raw:
                meta = pq.ParquetFile(raw).metadata
        except (pa.ArrowException, OSError, ValueError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{f.name}: cannot read it ({text})", path=f.name) from exc
        names = meta.schema.to_arrow_schema().names
        if self.column not in names:
            return None  # open() checked it; let the batch reader report what changed
        col = names.index(self.column)
        plan: list[tuple[tuple[int, ...], int]] = []
        groups: list[int] = []
        rows = size = 0
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            if group.num_columns != len(names):
                return None  # a nested schema: the leaf is not the column's index
            group_size = group.column(col).total_uncompressed_size
            if group_size > ROW_GROUP_BYTES:
                return None
            if group.num_rows == 0:
                continue
            if groups and size + group_size > chunk_bytes:
                plan.append((tuple(groups), rows))
                groups, rows, size = [], 0, 0
            groups.append(i)
            rows += group.num_rows
            size += group_size
        if groups:
            plan.append((tuple(groups), rows))
        return plan

    def batches(
        self, chunk_bytes: int, files: Sequence[DatasetFile] | None = None
    ) -> Generator[tuple[Any, ...], None, None]:
        """The column's values, in dataset order, as tuples of arrays of about ``chunk_bytes``
        (blocking: run on a thread), of ``files`` (default: all of them). Raises ``InputError``
        when a file cannot be read."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = batch_rows(chunk_bytes)
        held: list[Any] = []
        held_rows = 0
        for f in self.files if files is None else files:
            try:
                with f.open() as raw:
                    reader = pq.ParquetFile(raw, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
                    for batch in reader.iter_batches(
                        batch_size=target, columns=[self.column], use_threads=True
                    ):
                        if batch.num_rows == 0:
                            continue
                        held.append(batch.column(0))
                        held_rows += batch.num_rows
                        if held_rows >= target:
                            yield tuple(held)
                            held, held_rows = [], 0
            except (pa.ArrowException, OSError) as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(f"{f.name}: cannot read it ({text})", path=f.name) from exc
        if held:
            yield tuple(held)


def _as_binary(array: Any) -> Any:
    """``array`` as binary or large binary (zero-copy from strings), dictionaries decoded,
    integers written in decimal."""
    import pyarrow as pa

    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_integer(array.type):
        import pyarrow.compute as pc  # only here: its import costs a worker's start-up

        array = pc.cast(array, pa.string())
    kind = array.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return array
    if pa.types.is_string(kind):
        return array.view(pa.binary())  # the same buffers
    if pa.types.is_large_string(kind):
        return array.view(pa.large_binary())
    import pyarrow.compute as pc

    return pc.cast(array, pa.binary())  # views


def column_lines(job: ColumnJob) -> bytes:
    """The values of ``job`` as text lines, each ending ``\\n`` (worker side): one line per value,
    a null as an empty line, a value holding ``\\n`` as a NUL (malformed)."""
    return _lines(job.arrays)


def _lines(arrays: Sequence[Any]) -> bytes:
    import pyarrow as pa
    import pyarrow.compute as pc

    out: list[bytes] = []
    for array in arrays:
        if len(array) == 0:
            continue
        values = _as_binary(array)
        kind = values.type
        if values.null_count:
            values = pc.fill_null(values, pa.scalar(b"", kind))
        data = values.buffers()[2]
        # One memchr over the values' bytes; the exact per-value check only when it finds one.
        if data is not None and bytes(data).find(b"\n") >= 0:
            split = pc.match_substring(values, "\n")
            values = pc.if_else(split, pa.scalar(_MALFORMED, kind), values)
        lines = pc.binary_join_element_wise(values, pa.scalar(b"", kind), pa.scalar(b"\n", kind))
        _, offsets, joined = lines.buffers()[:3]
        width = np.int64 if pa.types.is_large_binary(kind) else np.int32
        bounds = np.frombuffer(offsets, dtype=width)
        start, end = int(bounds[lines.offset]), int(bounds[lines.offset + len(lines)])
        out.append(joined[start:end].to_pybytes())
    return b"".join(out)


def batch_rows(chunk_bytes: int) -> int:
    """Rows in about ``chunk_bytes`` of values."""
    return max(1024, chunk_bytes // _BATCH_VALUE_BYTES)


def column_arrays(job: ColumnJob | RowGroupJob) -> Iterator[Any]:
    """The job's arrays of the ID column, in row order; a :class:`RowGroupJob`'s row groups
    are read here (worker side), from the file mapped into memory, one record batch of at most
    :data:`READ_BATCH_ROWS` rows at a time, so that a worker never holds a whole row group's
    values. Raises ``InputError`` when the file cannot be read."""
    if isinstance(job, ColumnJob):
        yield from job.arrays
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # mapped: pages are decoded in place, with no copy through a read buffer
        with pq.ParquetFile(job.path, memory_map=True, pre_buffer=False) as reader:
            # One thread: the pool already runs one worker per core.
            for batch in reader.iter_batches(
                batch_size=min(job.run_rows, READ_BATCH_ROWS),
                row_groups=list(job.row_groups),
                columns=[job.column],
                use_threads=False,
            ):
                yield batch.column(0)
    except (pa.ArrowException, OSError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{job.file}: cannot read it ({text})", path=job.file) from exc


def _offsets_of(values: Any) -> tuple[Any, bool, int, int]:
    """(offsets buffer, whether int64, first and end byte of the values) of a binary or large
    binary array (an array of nulls only may have no offsets buffer: then None, 0, 0)."""
    import pyarrow as pa

    offsets = values.buffers()[1]
    wide = pa.types.is_large_binary(values.type)
    if offsets is None:
        return None, wide, 0, 0
    width = np.int64 if wide else np.int32
    bounds = np.frombuffer(offsets, dtype=width)
    return offsets, wide, int(bounds[values.offset]), int(bounds[values.offset + len(values)])


def column_hashes(arrays: Iterable[Any], **kw: Any) -> Iterator[tuple[ChunkHashes, int]]:
    """Hash the values of ``arrays`` as :func:`column_lines` would give them, one row per value
    (worker side): (hashes, bytes the values take as text lines) per non-empty array, in order.

    With the native engine each array's value buffer, offsets and validity bitmap go to it as
    they are (:func:`~asyncsync.rules.hashing.hash_arrow`), with no copy; the Python engine
    takes the line path. The results are those of the same values as text lines.
    """
    native = native_for(kw.get("engine"))
    for array in arrays:
        if len(array) == 0:
            continue
        values = _as_binary(array)
        if native is None:
            data = _lines([values])
            yield hash_chunk(data, **kw), len(data)
            continue
        offsets, wide, lo, hi = _offsets_of(values)
        hashed = hash_arrow(
            values.buffers()[2],
            offsets,
            wide=wide,
            first=values.offset,
            rows=len(values),
            validity=values.buffers()[0] if values.null_count else None,
            **kw,
        )
        assert hashed is not None  # the native engine hashes every kind from the buffers
        yield hashed, hi - lo + len(values)


def joined_hashes(parts: Sequence[ChunkHashes], **kw: Any) -> ChunkHashes:
    """One result of consecutive arrays' results (sample rows renumbered, at most
    ``sample_cap``); ``kw`` as for :func:`column_hashes`."""
    return _joined(list(parts), kw.get("sample_cap", 100), kw)


def _joined(parts: list[ChunkHashes], sample_cap: int, kw: dict[str, Any]) -> ChunkHashes:
    """One result of consecutive arrays' results (sample rows renumbered)."""
    if len(parts) == 1:
        return parts[0]
    size = digest_size(kw["id_type"], kw.get("hash_algo", "sha256"))
    sample: list[tuple[int, str]] = []
    base = 0
    for p in parts:
        sample.extend((base + i, reason) for i, reason in p.sample)
        base += p.rows
    return ChunkHashes(
        digests=b"".join(p.digests for p in parts),
        digest_size=size,
        rows=base,
        rejected=(
            sum(p.rejected[0] for p in parts),
            sum(p.rejected[1] for p in parts),
            sum(p.rejected[2] for p in parts),
        ),
        sample=tuple(sample[:sample_cap]),
        national=sum(p.national for p in parts),
    )
