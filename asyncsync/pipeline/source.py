"""Reading inputs: plain, gzip, zstd or streams; text (one ID a line) or a CSV column.

The parent process only plans and, where it must, streams: a plain uncompressed text file is cut
into byte ranges that the pool workers read themselves (:func:`read_range`), so no input byte
crosses a pipe. Compressed files, streams and CSV are read here in multi-MiB blocks (on a thread,
never a thread hop per line), cut on line boundaries (on record boundaries for CSV, so a quoted
field spanning several lines stays whole) and shipped to the workers as :class:`DataJob`.

A stream is ``-`` (stdin) or any name that is not a regular file or a directory: a pipe
(``<(cat ids.txt)``, ``/dev/stdin``), a named FIFO, a character device (:func:`is_stream`). A
stream is opened once and read once, front to back: its compression, whether it is text, and
its CSV layout are decided from its first block, on the reading thread, when its turn comes.

Memory stays bounded whatever the input: every reader hands out at most one chunk a call
(decompression included: a zstd frame that expands to gigabytes is read a chunk at a time), and
a line (or CSV record) longer than :data:`MAX_RECORD_BYTES` is refused with its line number.

Which kind an input is, is decided in one place, :func:`_check_one`; what reads each kind, in
:func:`iter_jobs`.

A chunk's rows are numbered by the worker from 0; the parent turns them into file line numbers
once every earlier chunk of the same input has reported how many line ends it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import os
import re
import stat
import sys
import threading
import zlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from asyncsync.errors import InputError, UsageError
from asyncsync.pipeline.external import External, column_jobs, external_input
from asyncsync.pipeline.parquet import ColumnJob, ParquetInput, RowGroupJob
from asyncsync.remote import RemoteObject, RemoteStream
from asyncsync.rules.ids import Reject, normalize
from asyncsync.rules.limits import IdType

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = [
    "CsvLayout",
    "DataJob",
    "InputSpec",
    "LineTooLongError",
    "RangeJob",
    "binary_reason",
    "count_line_ends",
    "csv_values",
    "is_stream",
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
DETECT: Final = "detect"
"""The compression of a stream, decided from its first bytes when it is read."""
DELIMITERS: Final = (",", ";", "\t", "|")
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024
"""A line or CSV record longer than this means the input is not an ID export."""
_SNIFF_BYTES: Final = 64 * 1024
BINARY_SHARE: Final = 0.3
"""An input whose first 64 KiB hold more than this share of bytes that are not text (NUL and
other control bytes, invalid UTF-8) is refused as binary; a few such bytes are malformed lines."""
BINARY_MAGIC: Final = (
    (b"PAR1", "Parquet data"),
    (b"PK\x03\x04", "a zip archive: xlsx, docx, jar or zip"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE2 document: xls or doc"),
    (b"ARROW1", "Arrow IPC data"),
    (b"Obj\x01", "Avro data"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"\xfd7zXZ\x00", "xz data; decompress it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x7fELF", "an executable"),
    (b"\xff\xfe", "UTF-16 text; convert it to UTF-8"),
    (b"\xfe\xff", "UTF-16 text; convert it to UTF-8"),
)
"""Formats known by their first bytes (after decompression) that are never an ID export."""
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_CONTROL_BYTES: Final = bytes([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])
_OTHER_BYTES: Final = bytes(b for b in range(256) if b not in _CONTROL_BYTES)

#: Stands for a CSV record lacking the column: NUL is malformed for every id type, never empty.
MISSING_FIELD: Final = b"\x00"


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """How to take the ID out of each record of one CSV input."""

    delimiter: str
    column: int  # 0-based
    has_header: bool


@dataclass(frozen=True, slots=True)
class CsvRequest:
    """The ``--column`` of a stream, whose CSV layout is read from its first block."""

    column: str | int
    id_type: IdType


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input, checked: a regular file exists, is readable and starts like text; a stream
    is checked when it is read (its first block)."""

    index: int
    name: str  # as the user gave it ("-" for stdin)
    path: Path | None  # None for stdin
    compression: str  # "none", "gzip", "zstd", or "detect" for a stream
    size: int | None  # bytes on disk when a regular file
    csv: CsvLayout | None
    stream: bool = False  # read once, front to back (see is_stream)
    csv_request: CsvRequest | None = None  # a stream's column, laid out when read
    external: External | None = None  # a Parquet dataset, or a remote object read as text

    @property
    def ranged(self) -> bool:
        """Workers read this input's byte ranges themselves."""
        return (
            not self.stream
            and self.path is not None
            and self.compression == "none"
            and self.csv is None
        )


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
    first_line: int  # line ends of this input before the chunk (kept for CSV records only)
    data: bytes
    csv: CsvLayout | None
    skip_first_record: bool


Job = RangeJob | DataJob | ColumnJob | RowGroupJob


class LineTooLongError(InputError):
    """A line (or CSV record) longer than :data:`MAX_RECORD_BYTES`.

    A pool worker that finds one in a byte range does not know how many lines precede its
    range: it raises this with ``line=None``, ``input_index`` and ``seq`` (its chunk) and
    ``chunk_line`` (1-based within the chunk), and the parent numbers it (:meth:`numbered`).
    """

    def __init__(
        self,
        name: str,
        line: int | None,
        record: bool = False,
        input_index: int = -1,
        seq: int = -1,
        chunk_line: int = 0,
    ) -> None:
        what = "CSV record (unbalanced quote?)" if record else "line"
        where = f"line {line}: " if line is not None else ""
        super().__init__(
            f"{name}: {where}a {what} longer than {MAX_RECORD_BYTES} bytes (64 MiB); "
            "is this an ID export?",
            path=name,
            line=line,
        )
        self.name = name
        self.record = record
        self.input_index = input_index
        self.seq = seq
        self.chunk_line = chunk_line

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.name, self.line, self.record, self.input_index, self.seq, self.chunk_line)
        return (type(self), args)

    def numbered(self, lines_before: int) -> LineTooLongError:
        """This error with its line number in the input, ``lines_before`` its chunk."""
        return LineTooLongError(self.name, lines_before + self.chunk_line, self.record)


def is_stream(name: str) -> bool:
    """Whether input ``name`` is read as a stream: ``-`` (stdin), or an existing name that is
    neither a regular file nor a directory (a pipe such as ``<(cat ids.txt)`` or ``/dev/stdin``,
    a named FIFO, a character device). A stream is read once, front to back: it cannot be
    split among the workers, nor fingerprinted, so a job reading one is not resumable."""
    if name == STDIN:
        return True
    try:
        mode = os.stat(name).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def binary_reason(head: bytes) -> str | None:
    """Why an input whose first bytes (up to 64 KiB, decompressed, BOM removed) are ``head``
    is not text, or None when it is text: it starts like a known binary format
    (:data:`BINARY_MAGIC`), or more than :data:`BINARY_SHARE` of it is not text. A few NUL
    bytes in a text export are not a reason: their lines are counted ``malformed``."""
    for magic, what in BINARY_MAGIC:
        if head.startswith(magic):
            return what
    if not head:
        return None
    control = len(head.translate(None, _OTHER_BYTES))
    invalid = head.decode("utf-8", "replace").count("\ufffd")
    share = (control + invalid) / len(head)
    if share > BINARY_SHARE:
        return (
            f"{share:.0%} of its first {len(head)} bytes are binary: control bytes or invalid UTF-8"
        )
    return None


def _check_text(name: str, head: bytes) -> None:
    reason = binary_reason(head)
    if reason is not None:
        raise InputError(f"{name}: not a text file ({reason})", path=name)


def _compression_of(magic: bytes) -> str:
    if magic.startswith(GZIP_MAGIC + GZIP_DEFLATE):
        return "gzip"
    if magic.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class _StreamReader:
    """A stream's bytes: ``head`` (its first bytes, read to decide its compression) and then
    the rest of ``raw``, an unbuffered file. ``read(n)`` returns ``n`` bytes, fewer only at the
    end (a pipe returns whatever its writer wrote so far).

    Unbuffered on purpose: a read blocked on a silent pipe, on a thread the process does not
    wait for, must not hold the lock of a buffered reader that the interpreter takes at exit.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._head = b""

    def unread(self, head: bytes) -> None:
        self._head = head

    def read(self, n: int = -1) -> bytes:
        head, self._head = self._head, b""
        if n < 0:
            return head + bytes(self.raw.read())
        if len(head) >= n:
            head, self._head = head[:n], head[n:]
            return head
        buf = bytearray(n)
        buf[: len(head)] = head
        got = len(head)
        with memoryview(buf) as view:
            while got < n:
                k = self.raw.readinto(view[got:])
                if not k:
                    break
                got += k
        if got < n:
            del buf[got:]
        return bytes(buf)

    def close(self) -> None:
        pass


def _stdin() -> Any:
    """Standard input, unbuffered (see :class:`_StreamReader`); a stdin without a file
    descriptor (an in-memory one, as test runners give) as it is."""
    if sys.stdin is None:
        raise InputError("-: standard input is closed", path=STDIN)
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdin.buffer
    return open(fd, "rb", buffering=0, closefd=False)


class _Stream:
    """A decompressed byte stream of one input, closed with every file under it.

    Decompression never returns more than asked for: ``read(n)`` holds at most ``n`` bytes of
    output (plus the decoder's input buffer), whatever the compression ratio.
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.compression = spec.compression
        self._raw: Any = None
        raw: Any
        try:
            if spec.stream:
                self._raw = _stdin() if spec.path is None else open(spec.path, "rb", buffering=0)
                raw = _StreamReader(self._raw)
                magic = raw.read(len(ZSTD_MAGIC))
                raw.unread(magic)
                self.compression = _compression_of(magic)
            elif isinstance(spec.external, RemoteObject):
                raw = self._raw = spec.external.open()
            else:
                raw = self._raw = open(spec.path or "", "rb")
        except OSError as exc:
            self.close()
            raise InputError(
                f"{spec.name}: cannot read ({exc.strerror or exc})", path=spec.name
            ) from None
        self._file: Any = raw
        self._read: Callable[[int], bytes] = raw.read
        if self.compression == "gzip":
            self._file = gzip.GzipFile(fileobj=raw, mode="rb")
            self._read = self._file.read
        elif self.compression == "zstd":
            # Concatenated frames are read across; a truncated last frame raises EOFError.
            self._file = zstd.ZstdFile(raw)
            self._read = self._file.read
        elif isinstance(raw, RemoteStream):
            blocks = raw

            def read(n: int) -> bytes:
                # The fetched blocks as they came, without joining them, unless more is asked
                # for than a block holds (a chunk size above it).
                return blocks.read1(n) if n <= blocks.block_bytes else blocks.read(n)

            self._read = read

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at the end (or, from an object store, when a fetched
        block ends first); ``b""`` at the end."""
        try:
            data = self._read(n)
        except (OSError, EOFError, zlib.error, zstd.ZstdError) as exc:
            raise InputError(
                f"{self.spec.name}: cannot read ({self.compression} data): {exc}",
                path=self.spec.name,
            ) from exc
        return bytes(data)

    def close(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None and file is not self._raw and self.compression != "none":
            file.close()  # the decoder only: it leaves the file under it open
        if self._raw is not None and self._raw is not getattr(sys.stdin, "buffer", None):
            self._raw.close()  # stdin itself stays open (its unbuffered view does not close it)


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
    """``--column`` as given: an integer (or a string of one) is a 1-based index, anything else
    a header name. Raises ``UsageError`` for an index below 1."""
    if column is None:
        return None
    if isinstance(column, bool):
        raise UsageError("--column must be a header name or a 1-based index")
    if isinstance(column, int):
        if column < 1:
            raise UsageError(
                f"--column {column}: column indexes are 1-based (the first column is 1, as "
                "with cut -f)"
            )
        return column
    text = column.strip()
    if not text:
        raise UsageError("--column must not be empty")
    if _INTEGER.fullmatch(text):
        return parse_column(int(text))
    return text


def _check_one(index: int, name: str, column: str | int | None, id_type: IdType) -> InputSpec:
    """What kind of input ``name`` is, checked as far as can be before reading it: the one
    place where an input kind is recognised."""
    if is_stream(name):
        path = None if name == STDIN else Path(name)
        request = None if column is None else CsvRequest(column, id_type)
        return InputSpec(index, name, path, DETECT, None, None, True, request)
    external = external_input(name, column)
    if isinstance(external, ParquetInput):
        return InputSpec(index, external.name, None, "none", external.size, None, external=external)
    if external is not None:
        magic = external.head(4)
        return _checked(index, external.name, None, external.size, magic, column, id_type, external)
    return _check_file(index, name, column, id_type)


def _check_file(index: int, name: str, column: str | int | None, id_type: IdType) -> InputSpec:
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
    """The checks shared by local files and remote objects, from their first bytes on."""
    compression = _compression_of(magic)
    spec = InputSpec(index, name, path, compression, size, None, external=external)
    stream = _Stream(spec)
    try:
        head = stream.read(_SNIFF_BYTES)
    finally:
        stream.close()
    if head.startswith(BOM):
        head = head[len(BOM) :]
    _check_text(name, head)
    if column is None:
        return spec
    layout = _detect_csv(name, head, column, id_type)
    return InputSpec(index, name, spec.path, compression, size, layout, external=external)


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


def count_line_ends(data: bytes | bytearray) -> int:
    """How many ``\n`` bytes ``data`` holds (numpy's compare and count run at memory speed,
    several times faster than ``bytes.count`` of one byte)."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 10))


def _record_cut(buf: bytes | bytearray) -> int:
    """Length of the longest prefix of ``buf`` made of whole CSV records (plain lines are cut
    by :meth:`_ChunkReader._whole_lines`)."""
    cut = buf.rfind(b"\n") + 1
    if cut == 0 or buf.count(b'"', 0, cut) % 2 == 0:
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


class _ChunkReader:
    """Blocks of whole lines (records) of one streamed input; every call runs off the event
    loop (opening a FIFO blocks until its writer comes, reading a pipe until its writer writes).

    Holds at most one block being read plus the unfinished line (record) carried to the next
    block, which :data:`MAX_RECORD_BYTES` bounds.
    """

    def __init__(self, spec: InputSpec, chunk_bytes: int) -> None:
        self.spec = spec
        self.chunk_bytes = chunk_bytes
        self.csv = spec.csv
        self.stream: _Stream | None = None
        self.carry = bytearray()
        self.eof = False
        self.lines_before = 0  # line ends of this input before the chunk last returned
        self._lines = 0
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False

    async def read_chunk(self) -> bytes | None:
        """:meth:`next` on a daemon thread of its own: a read blocked on a silent pipe must not
        hold up the end of the process once the job is cancelled (SIGINT, SIGTERM), as a
        thread of the event loop's executor would (the loop and the interpreter wait for
        those). The stream is closed by whichever of :meth:`close` and the read ends last."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes | None] = loop.create_future()

        def settle(result: bytes | None, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        def run() -> None:
            result: bytes | None = None
            error: BaseException | None = None
            try:
                result = self.next()
            except BaseException as exc:
                error = exc
            finally:
                with self._lock:
                    self._reading = False
                    close_now = self._closed
                if close_now:
                    self._close_stream()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        with self._lock:
            self._reading = True
        threading.Thread(target=run, name=f"asyncsync-read-{self.spec.index}", daemon=True).start()
        return await fut

    def _first_block(self) -> bytes:
        self.stream = _Stream(self.spec)
        # At least the head a regular file is checked on, so that both are judged alike.
        block = self.stream.read(max(self.chunk_bytes, _SNIFF_BYTES))
        if block.startswith(BOM):
            block = block[len(BOM) :]
        if self.spec.stream:  # a regular file was checked by open_inputs
            _check_text(self.spec.name, block[:_SNIFF_BYTES])
        request = self.spec.csv_request
        if request is not None:
            self.csv = _detect_csv(self.spec.name, block, request.column, request.id_type)
        return block

    def next(self) -> bytes | None:
        """The next chunk, or None at the end of the input."""
        while True:
            if self.eof:
                if not self.carry:
                    return None
                return self._hand_out(len(self.carry))
            if self.stream is None:
                block = self._first_block()
            else:
                block = self.stream.read(self.chunk_bytes)
            if not block:
                self.eof = True
                continue
            if self.csv is None:
                out = self._whole_lines(block)
                if out is None:
                    continue
                return out
            self.carry += block
            cut = _record_cut(self.carry)
            if cut == 0:
                if len(self.carry) > MAX_RECORD_BYTES:
                    raise LineTooLongError(self.spec.name, self._lines + 1, True)
                continue
            return self._hand_out(cut)

    def _whole_lines(self, block: bytes) -> bytes | None:
        """The carried line and ``block`` up to its last line end, in one copy; None when
        ``block`` holds no line end (it is carried)."""
        last = block.rfind(b"\n")
        if self.carry or last < 0:  # the carried line ends at the block's first line end
            first = block.find(b"\n")
            if len(self.carry) + (first if first >= 0 else len(block)) > MAX_RECORD_BYTES:
                # The first line of the next chunk: numbered by the caller, from the line
                # ends the workers counted in the chunks before it (see _count).
                raise LineTooLongError(self.spec.name, None, input_index=self.spec.index)
        if last < 0:
            self.carry += block
            return None
        with memoryview(block) as view:
            out = b"".join((self.carry, view[: last + 1])) if self.carry else block[: last + 1]
            self.carry = bytearray(view[last + 1 :])
        self._count(out)
        return out

    def _hand_out(self, cut: int) -> bytes:
        with memoryview(self.carry) as view:
            out = bytes(view[:cut])
        del self.carry[:cut]
        self._count(out)
        return out

    def _count(self, out: bytes) -> None:
        """Keep ``lines_before`` for a CSV input, whose worker numbers its errors itself;
        plain lines are counted by the workers only (``ChunkResult.newlines``)."""
        if self.csv is None:
            return
        self.lines_before = self._lines
        self._lines += count_line_ends(out)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._reading:
                return  # the reading thread closes the stream when its read returns
        self._close_stream()

    def _close_stream(self) -> None:
        if self.stream is not None:
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
        reader = _ChunkReader(spec, chunk_bytes)
        try:
            first = True
            while (data := await _next_chunk(reader, seq)) is not None:
                layout = reader.csv
                skip = first and layout is not None and layout.has_header
                first = False
                yield DataJob(seq, spec.index, spec.name, reader.lines_before, data, layout, skip)
                seq += 1
        finally:
            reader.close()


async def _next_chunk(reader: _ChunkReader, seq: int) -> bytes | None:
    """``reader``'s next chunk, to be job ``seq``; a line too long for it is the first line of
    that job, numbered by the caller once the jobs before it are counted."""
    try:
        return await reader.read_chunk()
    except LineTooLongError as exc:
        if exc.line is not None:
            raise
        raise LineTooLongError(exc.name, None, exc.record, exc.input_index, seq, 1) from None


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
                # The last line goes on past the range: read it to its end, within the limit.
                started = len(data) - (data.rfind(b"\n") + 1)
                tail = bytearray()
                while block := f.read(1 << 16):
                    nl = block.find(b"\n")
                    if nl >= 0:
                        tail += block[: nl + 1]
                        break
                    tail += block
                    if started + len(tail) > MAX_RECORD_BYTES:
                        break
                if started + len(tail) - tail.endswith(b"\n") > MAX_RECORD_BYTES:
                    chunk_line = data.count(b"\n") + 1
                    raise LineTooLongError(
                        job.name, None, False, job.input_index, job.seq, chunk_line
                    )
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
