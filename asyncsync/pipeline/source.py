"""Reading inputs: plain, gzip, zstd or stdin; text (one ID a line) or a CSV column.

The parent process only plans and, where it must, streams: a plain uncompressed text file is cut
into byte ranges that the pool workers read themselves (:func:`read_range`), so no input byte
crosses a pipe. Compressed files, stdin and CSV are read here in multi-MiB blocks (on a thread,
never a thread hop per line), cut on line boundaries (on record boundaries for CSV, so a quoted
field spanning several lines stays whole) and shipped to the workers as :class:`DataJob`.

A chunk's rows are numbered by the worker from 0; the parent turns them into file line numbers
once every earlier chunk of the same input has reported how many line ends it held.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import os
import sys
import zlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import zstandard

from asyncsync.errors import InputError, UsageError
from asyncsync.pipeline.external import External, column_jobs, external_input
from asyncsync.pipeline.parquet import ColumnJob, ParquetInput
from asyncsync.pipeline.remote import RemoteObject
from asyncsync.rules.ids import Reject, normalize
from asyncsync.rules.limits import IdType

__all__ = [
    "CsvLayout",
    "DataJob",
    "InputSpec",
    "RangeJob",
    "csv_values",
    "iter_jobs",
    "open_inputs",
    "read_range",
]

BOM: Final = b"\xef\xbb\xbf"
GZIP_MAGIC: Final = b"\x1f\x8b"
GZIP_DEFLATE: Final = b"\x08"
"""The compression method byte after the magic: deflate is the only one gzip defines."""
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
STDIN: Final = "-"
DELIMITERS: Final = (",", ";", "\t", "|")
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024
"""A line or CSV record longer than this means the input is not an ID export."""
_SNIFF_BYTES: Final = 64 * 1024

#: Stands for a CSV record lacking the column: NUL is malformed for every id type, never empty.
MISSING_FIELD: Final = b"\x00"


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """How to take the ID out of each record of one CSV input."""

    delimiter: str
    column: int  # 0-based
    has_header: bool


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input, checked: it exists, is readable and starts like text."""

    index: int
    name: str  # as the user gave it ("-" for stdin)
    path: Path | None  # None for stdin
    compression: str  # "none", "gzip" or "zstd"
    size: int | None  # bytes on disk when a regular file
    csv: CsvLayout | None
    external: External | None = None  # a Parquet dataset, or a remote object read as text

    @property
    def ranged(self) -> bool:
        """Workers read this input's byte ranges themselves."""
        return self.path is not None and self.compression == "none" and self.csv is None


@dataclass(frozen=True, slots=True)
class RangeJob:
    """Lines of a plain text file whose first byte lies in ``[start, end)``."""

    seq: int
    input_index: int
    name: str
    path: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class DataJob:
    """Whole lines (or CSV records) already read by the parent."""

    seq: int
    input_index: int
    name: str
    first_line: int  # line ends of this input before the chunk
    data: bytes
    csv: CsvLayout | None
    skip_first_record: bool


Job = RangeJob | DataJob | ColumnJob


def _not_text(name: str) -> InputError:
    return InputError(f"{name}: not a text file (binary data found)", path=name)


def _open_stream(spec: InputSpec) -> BinaryIO:
    if isinstance(spec.external, RemoteObject):
        raw: BinaryIO = spec.external.open()  # type: ignore[assignment]
    elif spec.path is None:
        return sys.stdin.buffer
    else:
        raw = open(spec.path, "rb")  # closed by _Stream.close
    if spec.compression == "gzip":
        # GzipFile closes only itself, not ``raw``: see _Stream.close.
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if spec.compression == "zstd":
        return _ZstdFrames(raw)  # type: ignore[return-value]
    return raw


class _ZstdFrames:
    """The concatenated zstd frames of ``raw``, decompressed; a truncated last frame raises
    ``ZstdError`` (zstandard's ``stream_reader`` ends quietly there, losing the frame's tail)."""

    _IN_BYTES: Final = 1 << 16

    def __init__(self, raw: BinaryIO) -> None:
        self.fileobj = raw  # closed by _Stream.close
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._fed = False
        self._out = bytearray()

    def read(self, n: int) -> bytes:
        """At most ``n`` bytes; fewer only at the end of the input."""
        out = self._out
        while len(out) < n:
            data = self.fileobj.read(self._IN_BYTES)
            if not data:
                if self._fed:
                    raise zstandard.ZstdError("the input ends inside a zstd frame (truncated)")
                break
            while data:
                self._fed = True
                out += self._obj.decompress(data)
                if not self._obj.eof:
                    break
                data = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._fed = False
        block = bytes(out[:n])
        del out[:n]
        return block

    def close(self) -> None:
        pass


class _Stream:
    """A decompressed byte stream of one input, closed with every file under it."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self._file = _open_stream(spec)

    def read(self, n: int) -> bytes:
        try:
            data = self._file.read(n)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise InputError(
                f"{self.spec.name}: cannot read ({self.spec.compression} data): {exc}",
                path=self.spec.name,
            ) from exc
        return bytes(data)

    def close(self) -> None:
        if self.spec.path is None and self.spec.external is None:
            return
        inner = getattr(self._file, "fileobj", None)
        self._file.close()
        if inner is not None:
            inner.close()


def _detect_csv(name: str, head: bytes, column: str | int, id_type: IdType) -> CsvLayout:
    """Delimiter, 0-based column and header presence from the first record of a CSV input."""
    first_line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    counts = [first_line.count(d) for d in DELIMITERS]
    delimiter = DELIMITERS[counts.index(max(counts))] if max(counts) else ","
    text = head.decode("utf-8", "surrogateescape")
    try:
        header = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), [])
    except csv.Error as exc:
        raise InputError(f"{name}: line 1: not readable as CSV: {exc}", path=name, line=1) from exc
    fields = [f.strip() for f in header]
    if isinstance(column, int):
        if column > len(fields) and fields:
            raise InputError(
                f"{name}: --column {column} is past the {len(fields)} column(s) of its first "
                "record",
                path=name,
            )
        index = column - 1
        # With an index the header is optional: the first record is taken for a header when
        # its field is no valid ID and holds no digit (a name such as "idfa" or "email").
        value = fields[index] if index < len(fields) else ""
        is_header = (
            bool(value)
            and isinstance(normalize(value.encode("utf-8", "surrogateescape"), id_type), Reject)
            and not any(ch.isdigit() for ch in value)
        )
        return CsvLayout(delimiter, index, is_header)
    for i, field in enumerate(fields):
        if field == column:
            return CsvLayout(delimiter, i, True)
    lowered = column.casefold()
    for i, field in enumerate(fields):
        if field.casefold() == lowered:
            return CsvLayout(delimiter, i, True)
    shown = ", ".join(repr(f) for f in fields[:20]) or "none"
    raise InputError(f"{name}: no column {column!r} in its header (columns: {shown})", path=name)


def parse_column(column: str | int | None) -> str | int | None:
    """``--column`` as given: digits mean a 1-based index, anything else a header name."""
    if column is None:
        return None
    if isinstance(column, bool):
        raise UsageError("--column must be a header name or a 1-based index")
    if isinstance(column, int):
        if column < 1:
            raise UsageError(f"--column {column}: indexes start at 1")
        return column
    text = column.strip()
    if not text:
        raise UsageError("--column must not be empty")
    if text.isdigit():
        return parse_column(int(text))
    return text


def _check_one(index: int, name: str, column: str | int | None, id_type: IdType) -> InputSpec:
    if name == STDIN:
        return InputSpec(index, name, None, "none", None, None)
    external = external_input(name, column)
    if isinstance(external, ParquetInput):
        return InputSpec(index, external.name, None, "none", external.size, None, external)
    if external is not None:
        magic = external.head(4)
        return _checked(index, external.name, None, external.size, magic, column, id_type, external)
    path = Path(name)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            magic = f.read(4)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file", path=name) from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not a file", path=name) from None
    except PermissionError:
        raise InputError(f"{name}: cannot read (permission denied)", path=name) from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})", path=name) from None
    return _checked(index, name, path.resolve(), st.st_size, magic, column, id_type, None)


def _checked(
    index: int,
    name: str,
    path: Path | None,
    size: int | None,
    magic: bytes,
    column: str | int | None,
    id_type: IdType,
    external: External | None,
) -> InputSpec:
    compression = "none"
    if magic.startswith(GZIP_MAGIC + GZIP_DEFLATE):
        compression = "gzip"
    elif magic == ZSTD_MAGIC:
        compression = "zstd"
    spec = InputSpec(index, name, path, compression, size, None, external)
    stream = _Stream(spec)
    try:
        head = stream.read(_SNIFF_BYTES)
    finally:
        stream.close()
    if b"\x00" in head:
        raise _not_text(name)
    if column is None:
        return spec
    if head.startswith(BOM):
        head = head[len(BOM) :]
    layout = _detect_csv(name, head, column, id_type)
    return InputSpec(index, name, spec.path, compression, size, layout, external)


def open_inputs(
    inputs: Sequence[str], column: str | int | None, id_type: IdType
) -> list[InputSpec]:
    """Check every input before any work starts (exists, readable, text, CSV column found).

    Raises ``InputError`` naming the file, ``UsageError`` for stdin given twice.
    """
    if not inputs:
        raise UsageError("no input given (pass one or more files, or - for stdin)")
    if sum(1 for name in inputs if name == STDIN) > 1:
        raise UsageError("stdin (-) may be given only once")
    parsed = parse_column(column)
    return [_check_one(i, name, parsed, id_type) for i, name in enumerate(inputs)]


def _record_cut(buf: bytes, is_csv: bool) -> int:
    """Length of the longest prefix of ``buf`` made of whole lines (or whole CSV records)."""
    cut = buf.rfind(b"\n") + 1
    if not is_csv or cut == 0 or buf.count(b'"', 0, cut) % 2 == 0:
        return cut
    # A line end inside a quoted field is no record end: keep the last line end after which
    # the number of quotes seen is even.
    arr = np.frombuffer(buf, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    quotes = np.flatnonzero(arr == 34)
    even = (np.searchsorted(quotes, nl) % 2) == 0
    if not even.any():
        return 0
    return int(nl[np.flatnonzero(even)[-1]]) + 1


def _ranges(spec: InputSpec, chunk_bytes: int) -> list[tuple[int, int]]:
    size = spec.size or 0
    return [(start, min(start + chunk_bytes, size)) for start in range(0, size, chunk_bytes)]


def _stream_chunks(spec: InputSpec, chunk_bytes: int) -> _ChunkReader:
    return _ChunkReader(spec, chunk_bytes)


class _ChunkReader:
    """Blocks of whole lines (records) of one streamed input; run on a thread."""

    def __init__(self, spec: InputSpec, chunk_bytes: int) -> None:
        self.spec = spec
        self.chunk_bytes = chunk_bytes
        self.stream = _Stream(spec)
        self.carry = b""
        self.first = True
        self.eof = False

    def next(self) -> bytes | None:
        """The next chunk, or None at the end of the input."""
        is_csv = self.spec.csv is not None
        while True:
            if self.eof:
                if not self.carry:
                    return None
                out, self.carry = self.carry, b""
                return out
            block = self.stream.read(self.chunk_bytes)
            if self.first:
                self.first = False
                if block.startswith(BOM):
                    block = block[len(BOM) :]
                if b"\x00" in block[:_SNIFF_BYTES]:
                    raise _not_text(self.spec.name)
            if not block:
                self.eof = True
                continue
            buf = self.carry + block if self.carry else block
            cut = _record_cut(buf, is_csv)
            if cut == 0:
                if len(buf) > MAX_RECORD_BYTES:
                    what = "record (unbalanced quote?)" if is_csv else "line"
                    raise InputError(
                        f"{self.spec.name}: a {what} longer than {MAX_RECORD_BYTES} bytes; "
                        "is this an ID export?",
                        path=self.spec.name,
                    )
                self.carry = buf
                continue
            self.carry = buf[cut:]
            return buf[:cut]

    def close(self) -> None:
        self.stream.close()


async def iter_jobs(specs: Sequence[InputSpec], chunk_bytes: int) -> AsyncGenerator[Job, None]:
    """Every chunk of every input, in input order, as jobs for the pool (``seq`` from 0)."""
    seq = 0
    for spec in specs:
        if isinstance(spec.external, ParquetInput):
            async for column_job in column_jobs(spec.external, spec.index, seq, chunk_bytes):
                yield column_job
                seq += 1
            continue
        if spec.ranged:
            assert spec.path is not None
            for start, end in _ranges(spec, chunk_bytes):
                yield RangeJob(seq, spec.index, spec.name, str(spec.path), start, end)
                seq += 1
            continue
        reader = _stream_chunks(spec, chunk_bytes)
        try:
            first, lines_before = True, 0
            while (data := await asyncio.to_thread(reader.next)) is not None:
                skip = first and spec.csv is not None and spec.csv.has_header
                first = False
                yield DataJob(seq, spec.index, spec.name, lines_before, data, spec.csv, skip)
                lines_before += data.count(b"\n")
                seq += 1
        finally:
            reader.close()


def read_range(job: RangeJob) -> bytes:
    """The lines of ``job.path`` whose first byte is in ``[start, end)`` (worker side).

    The line that straddles ``start`` belongs to the previous range, which reads past its own
    end to finish it; a byte-order mark at offset 0 is dropped.
    """
    try:
        with open(job.path, "rb") as f:
            if job.start > 0:
                f.seek(job.start - 1)
                data = f.read(job.end - job.start + 1)
                first_nl = data.find(b"\n")
                if first_nl < 0:
                    return b""
                data = data[first_nl + 1 :]
            else:
                data = f.read(job.end)
                if data.startswith(BOM):
                    data = data[len(BOM) :]
            if data and not data.endswith(b"\n"):
                tail = bytearray()
                while block := f.read(1 << 16):
                    nl = block.find(b"\n")
                    if nl >= 0:
                        tail += block[: nl + 1]
                        break
                    tail += block
                data += bytes(tail)
    except OSError as exc:
        raise InputError(f"{job.name}: cannot read ({exc.strerror or exc})", path=job.name) from exc
    return data


def csv_values(job: DataJob) -> tuple[list[bytes], list[int]]:
    """The ID field of every record of ``job`` and the 1-based physical line each starts on
    (relative to the chunk). A blank line is a record with an empty value; a record too short
    to hold the column gets :data:`MISSING_FIELD`."""
    layout = job.csv
    assert layout is not None
    text = job.data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter, strict=False)
    values: list[bytes] = []
    lines: list[int] = []
    col = layout.column
    skip = job.skip_first_record
    prev = 0
    try:
        for record in reader:
            start, prev = prev + 1, reader.line_num
            if skip:
                skip = False
                continue
            lines.append(start)
            if not record:
                values.append(b"")
            elif len(record) <= col:
                values.append(MISSING_FIELD)
            else:
                values.append(record[col].encode("utf-8", "surrogateescape"))
    except csv.Error as exc:
        line = job.first_line + prev + 1
        raise InputError(
            f"{job.name}: line {line}: not readable as CSV: {exc}", path=job.name, line=line
        ) from exc
    return values, lines
