"""The chunk hasher: normalize, validate and hash a whole chunk of lines at once.

This is the hot loop of ``prepare``; it runs in the process pool. It must give exactly what the
per-line reference of :mod:`asyncsync.rules.ids` gives (``normalize`` then ``hash_id``), line for
line, which the tests check against that oracle on random and adversarial input.

Two engines (:mod:`asyncsync.rules.engine`): the **native** one hands the whole chunk to the C
extension ``asyncsync._native`` (one call, without the GIL: split, trim, validate, normalize,
hash into one buffer of binary digests); the few lines it hands back (a non-ASCII email
address, whose rules are Unicode's) are normalized here with the reference rules, each into the
slot the extension left for it. The **Python** engine, below, is the reference the native one
must equal byte for byte, and what runs where the extension is not built.

Fixed-width kinds (mobile IDs, already hashed input) are checked with numpy: every line whose
length, after an optional ``\\r`` before its ``\\n``, is exactly the template's width is checked
against the template as one matrix (hex columns, dash columns) and lowercased through a lookup
table; any other line (blank, padded, too short or long) goes through the per-line oracle, so
the two paths cannot disagree. Digests are then computed with one ``digest()`` call per ID and
returned as one ``bytes`` of binary digests in line order; hex encoding happens once per part.
Email and phone lines go through the oracle line by line.

Pure functions over bytes: no I/O, no asyncio.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

try:  # CPython's built-in SHA-256/MD5 cost about half of OpenSSL's per call on 36-byte inputs.
    from _md5 import md5 as _md5  # type: ignore[import-not-found]
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - other interpreters or Python >= 3.12
    _md5 = hashlib.md5
    _sha256 = hashlib.sha256

from asyncsync.rules.engine import Engine, native_for
from asyncsync.rules.ids import Reject, is_national_phone, normalize
from asyncsync.rules.limits import HashAlgo, IdType

if TYPE_CHECKING:  # collections.abc.Buffer from Python 3.12 on
    from typing_extensions import Buffer

__all__ = [
    "REASONS",
    "ChunkHashes",
    "digest_size",
    "hash_arrow",
    "hash_chunk",
    "hash_values",
]

REASONS: Final = (Reject.EMPTY, Reject.MALFORMED, Reject.ZERO_ID)
"""Rejection reasons in the order of :attr:`ChunkHashes.rejected`."""

_VALID: Final = 0
_STATUS: Final = {Reject.EMPTY: 1, Reject.MALFORMED: 2, Reject.ZERO_ID: 3}
_REASON_OF_STATUS: Final = {1: Reject.EMPTY, 2: Reject.MALFORMED, 3: Reject.ZERO_ID}

_HASH_SLICE: Final = 1 << 15
_MAID_DASHES: Final = np.array([8, 13, 18, 23])
_MAID_ZERO: Final = np.frombuffer(b"00000000-0000-0000-0000-000000000000", dtype=np.uint8)

Status = npt.NDArray[np.int8]
Matrix = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class ChunkHashes:
    """What one chunk gave.

    ``digests``: the binary digests of the valid lines, in line order, ``digest_size`` bytes each
    (already hashed input is decoded from hex, so the part writer hex-encodes every kind alike).
    ``rows``: lines (or values) seen. ``rejected``: counts per reason, in :data:`REASONS` order.
    ``sample``: up to ``sample_cap`` rejected lines as (0-based index in the chunk, reason).
    ``national``: phone lines rejected only for being national numbers (a single leading 0,
    no default country), counted among the malformed ones.
    """

    digests: bytes
    digest_size: int
    rows: int
    rejected: tuple[int, int, int]
    sample: tuple[tuple[int, str], ...]
    national: int = 0

    @property
    def valid(self) -> int:
        return len(self.digests) // self.digest_size

    def hex_digests(self) -> list[bytes]:
        """The digests as the lowercase hex lines a part holds (for tests and debugging)."""
        hexed = binascii.hexlify(self.digests)
        width = 2 * self.digest_size
        return [hexed[i : i + width] for i in range(0, len(hexed), width)]


def digest_size(id_type: IdType | str, hash_algo: HashAlgo | str) -> int:
    """Bytes of one binary digest written for ``id_type`` hashed with ``hash_algo`` (32 or 16)."""
    kind = IdType(id_type)
    if kind is IdType.SHA256:
        return 32
    if kind is IdType.MD5:
        return 16
    return 16 if HashAlgo(hash_algo) is HashAlgo.MD5 else 32


def _template(kind: IdType) -> tuple[int, bool] | None:
    """(width, is_mobile) for fixed-width kinds, None for the per-line kinds."""
    if kind in (IdType.AUTO, IdType.MAID):
        return 36, True
    if kind is IdType.SHA256:
        return 64, False
    if kind is IdType.MD5:
        return 32, False
    return None


def _line_bounds(arr: Matrix) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end (before the line end) of each line; a final line needs no ``\\n``."""
    nl = np.flatnonzero(arr == 10).astype(np.int64)
    ends = nl if len(arr) == 0 or arr[-1] == 10 else np.append(nl, np.int64(len(arr)))
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        # CRLF: the \r belongs to the line end.
        last = np.maximum(ends - 1, 0)
        ends = ends - ((ends > starts) & (arr[last] == 13))
    return starts, ends


def _any_row(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Whether each row of a boolean matrix (width a multiple of 4) holds a True."""
    words = np.ascontiguousarray(mask).view(np.uint32)
    any_set: npt.NDArray[np.bool_] = np.bitwise_or.reduce(words, axis=1) != 0
    return any_set


def _fixed_width(data: bytes, width: int, mobile: bool) -> tuple[Status, Matrix]:
    """Status per line and the normalized IDs (one row per line, valid rows meaningful)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    starts, ends = _line_bounds(arr)
    n = len(starts)
    status: Status = np.full(n, _STATUS[Reject.MALFORMED], dtype=np.int8)
    fast = (ends - starts) == width
    fast_idx = np.flatnonzero(fast)
    all_fast = len(fast_idx) == n
    norm: Matrix = (
        np.empty((0, width), dtype=np.uint8) if all_fast else np.zeros((n, width), dtype=np.uint8)
    )
    if len(fast_idx):
        windows = np.lib.stride_tricks.sliding_window_view(arr, width)
        mat = windows[starts[fast_idx]]
        # Bitwise checks (a few ns a row) instead of lookup tables: "0"-"9", "-" and "a"-"f"
        # already have bit 0x20 set, so ``| 0x20`` lowercases every valid row, and only
        # "A"-"F"/"a"-"f" land in "a"-"f" through it.
        lower = mat | np.uint8(0x20)
        bad = ((mat - np.uint8(0x30)) >= 10) & ((lower - np.uint8(0x61)) >= 6)
        if mobile:
            bad[:, _MAID_DASHES] = mat[:, _MAID_DASHES] != 0x2D
        good = ~_any_row(bad)
        if all_fast:
            norm = lower
        else:
            _rows(norm)[fast_idx] = _rows(lower)
        fast_status = np.where(good, _VALID, _STATUS[Reject.MALFORMED]).astype(np.int8)
        if mobile:
            zero = good & ~_any_row(lower != _MAID_ZERO)
            fast_status[zero] = _STATUS[Reject.ZERO_ID]
        status[fast_idx] = fast_status
    kind = IdType.MAID if mobile else (IdType.SHA256 if width == 64 else IdType.MD5)
    for i in np.flatnonzero(~fast).tolist():
        result = normalize(data[starts[i] : ends[i]], kind)
        if isinstance(result, Reject):
            status[i] = _STATUS[result]
        else:
            status[i] = _VALID
            norm[i] = np.frombuffer(result, dtype=np.uint8)
    return status, norm


def _finish(
    status: Status,
    digests: bytes,
    size: int,
    sample_cap: int,
    national: int = 0,
) -> ChunkHashes:
    counts = np.bincount(status, minlength=4)
    bad = np.flatnonzero(status != _VALID)[:sample_cap].tolist()
    sample = tuple((i, _REASON_OF_STATUS[int(status[i])].value) for i in bad)
    return ChunkHashes(
        digests=digests,
        digest_size=size,
        rows=len(status),
        rejected=(int(counts[1]), int(counts[2]), int(counts[3])),
        sample=sample,
        national=national,
    )


def _rows(matrix: Matrix) -> npt.NDArray[np.void]:
    """A C-contiguous byte matrix as a vector of opaque rows (fast to gather and compress)."""
    return matrix.view(f"V{matrix.shape[1]}").reshape(len(matrix))


def _hash_rows(valid: npt.NDArray[np.void], mobile: bool, algo: HashAlgo) -> bytes:
    if not mobile:
        return binascii.unhexlify(valid.tobytes())
    # One bytes object per ID in one C call; an "S" dtype drops trailing NULs, which a
    # normalized mobile ID never holds.
    as_bytes = valid.view(f"S{valid.dtype.itemsize}")
    h = _md5 if algo is HashAlgo.MD5 else _sha256
    digest = type(h(b"")).digest  # the unbound method: map() then loops in C
    # In slices, so that the short-lived objects of one slice reuse the memory of the last.
    out = bytearray()
    for start in range(0, len(as_bytes), _HASH_SLICE):
        ids: list[bytes] = as_bytes[start : start + _HASH_SLICE].tolist()
        out += b"".join(map(digest, map(h, ids)))
    return bytes(out)


def _per_line(
    lines: Sequence[bytes], kind: IdType, algo: HashAlgo, default_country: str | None = None
) -> tuple[Status, bytes, int]:
    """Status per line, the digests, and how many lines were national phone numbers."""
    h = _md5 if algo is HashAlgo.MD5 else _sha256
    status: Status = np.zeros(len(lines), dtype=np.int8)
    out: list[bytes] = []
    count_national = kind is IdType.PHONE and default_country is None
    national = 0
    for i, line in enumerate(lines):
        result = normalize(line, kind, default_country)
        if isinstance(result, Reject):
            status[i] = _STATUS[result]
            if count_national and result is Reject.MALFORMED and is_national_phone(line):
                national += 1
        else:
            out.append(h(result).digest())
    return status, b"".join(out), national


def hash_chunk(
    data: bytes,
    *,
    id_type: IdType | str,
    hash_algo: HashAlgo | str = HashAlgo.SHA256,
    sample_cap: int = 100,
    default_country: str | None = None,
    engine: Engine | None = None,
) -> ChunkHashes:
    """Normalize, validate and hash every line of ``data``.

    Lines end with ``\\n`` or ``\\r\\n``; a last line without a line end counts; an empty
    ``data`` holds no line. A byte-order mark must already be removed by the reader.
    ``default_country`` is the region phone numbers without ``+``/``00`` belong to.
    ``engine``: ``native`` or ``python``; default: :func:`~asyncsync.rules.engine.active_engine`.
    """
    kind, algo = IdType(id_type), HashAlgo(hash_algo)
    native = native_for(engine)
    if native is None:
        return _python_hash_chunk(data, kind, algo, sample_cap, default_country)
    return _native_hash(native, data, None, kind, algo, sample_cap, default_country)


def hash_values(
    values: Sequence[bytes],
    *,
    id_type: IdType | str,
    hash_algo: HashAlgo | str = HashAlgo.SHA256,
    sample_cap: int = 100,
    default_country: str | None = None,
    engine: Engine | None = None,
) -> ChunkHashes:
    """Like :func:`hash_chunk` for values already split out (a CSV column); a value may hold
    line ends (a quoted multi-line field) and is still one row."""
    kind, algo = IdType(id_type), HashAlgo(hash_algo)
    native = native_for(engine)
    if native is None:
        return _python_hash_values(values, kind, algo, sample_cap, default_country)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    bounds = np.empty((len(values), 2), dtype=np.int64)
    np.cumsum(lengths, out=bounds[:, 1])
    bounds[:, 0] = bounds[:, 1] - lengths
    joined = b"".join(values)
    return _native_hash(native, joined, bounds, kind, algo, sample_cap, default_country)


def hash_arrow(
    data: Buffer | None,
    offsets: Buffer | None,
    *,
    wide: bool,
    first: int,
    rows: int,
    validity: Buffer | None = None,
    id_type: IdType | str,
    hash_algo: HashAlgo | str = HashAlgo.SHA256,
    sample_cap: int = 100,
    default_country: str | None = None,
    engine: Engine | None = None,
) -> ChunkHashes | None:
    """Like :func:`hash_chunk` for the values ``first`` to ``first + rows - 1`` of an Arrow
    binary array, each one row, straight from its buffers with the native engine: ``data``
    (the values), ``offsets`` (int32, or int64 when ``wide``; None for an array of nulls only),
    ``validity`` (the bitmap, None when no value is null). A null is an empty row; a value
    holding ``\\n`` is malformed, as it is when written as text (where it would be two lines).

    None when the native engine is not the one in use: then the caller hashes the rows as
    lines. ``ValueError`` when the offsets point outside ``data``."""
    kind, algo = IdType(id_type), HashAlgo(hash_algo)
    native = native_for(engine)
    if native is None:
        return None
    if offsets is None:  # an all-null array of a type without buffers: every row empty
        offsets, wide, first = bytes(8 * (rows + 1)), True, 0
    size = digest_size(kind, algo)
    flags = _DEFER_PHONE_LOCAL if kind is IdType.PHONE and default_country is not None else 0
    values = b"" if data is None else data
    answer = native.hash_arrow(
        values,
        offsets,
        wide,
        first,
        rows,
        validity,
        _NATIVE_KIND[kind],
        _NATIVE_ALGO[algo],
        flags,
        sample_cap,
    )
    return _native_result(values, size, answer, kind, algo, sample_cap, default_country)


# --------------------------------------------------------------------------- native engine

_NATIVE_KIND: Final = {
    IdType.AUTO: 0,
    IdType.MAID: 0,
    IdType.EMAIL: 1,
    IdType.PHONE: 2,
    IdType.SHA256: 3,
    IdType.MD5: 4,
}
_NATIVE_ALGO: Final = {HashAlgo.SHA256: 0, HashAlgo.MD5: 1}
_DEFER_PHONE_LOCAL: Final = 1
"""``hash_lines`` flag: phone numbers without ``+``/``00`` go back to Python (a default
country is set)."""


def _native_hash(
    native: ModuleType,
    data: Buffer,
    bounds: npt.NDArray[np.int64] | None,
    kind: IdType,
    algo: HashAlgo,
    sample_cap: int,
    default_country: str | None,
) -> ChunkHashes:
    """The native engine over ``data`` (split on line ends, or into the rows ``bounds``). With a
    default country, phone numbers written without ``+``/``00`` are handed back to Python."""
    size = digest_size(kind, algo)
    flags = _DEFER_PHONE_LOCAL if kind is IdType.PHONE and default_country is not None else 0
    answer = native.hash_lines(
        data, _NATIVE_KIND[kind], _NATIVE_ALGO[algo], flags, sample_cap, bounds
    )
    return _native_result(data, size, answer, kind, algo, sample_cap, default_country)


_NativeAnswer = tuple[
    bytes, int, tuple[int, int, int], list[tuple[int, int]], list[tuple[int, int, int, int]], int
]
"""What ``hash_lines`` and ``hash_arrow`` return: (digests, rows, rejected counts, sample,
deferred rows, national), ``national`` being the phone lines found malformed for being national
numbers (:func:`~asyncsync.rules.ids.is_national_phone`; none are with a default country, which
reads them)."""


def _native_result(
    data: Buffer,
    size: int,
    answer: _NativeAnswer,
    kind: IdType,
    algo: HashAlgo,
    sample_cap: int,
    default_country: str | None,
) -> ChunkHashes:
    """What the extension returned, with the rows it handed back settled (see
    :func:`_settle_deferred`)."""
    digests, rows, rejected, sample, deferred, national = answer
    if deferred:
        digests, rejected, sample = _settle_deferred(
            data, deferred, digests, rejected, sample, kind, algo, sample_cap, default_country
        )
    return ChunkHashes(
        digests=digests,
        digest_size=size,
        rows=rows,
        rejected=rejected,
        sample=tuple((i, _REASON_OF_STATUS[code].value) for i, code in sample),
        national=national,
    )


def _settle_deferred(
    data: Buffer,
    deferred: list[tuple[int, int, int, int]],
    digests: bytes,
    rejected: tuple[int, int, int],
    sample: list[tuple[int, int]],
    kind: IdType,
    algo: HashAlgo,
    sample_cap: int,
    default_country: str | None = None,
) -> tuple[bytes, tuple[int, int, int], list[tuple[int, int]]]:
    """Normalize the lines the native engine handed back with the reference rules: a valid
    line's digest fills its slot, a rejected line's slot is dropped and the line counted."""
    h = _md5 if algo is HashAlgo.MD5 else _sha256
    size = digest_size(kind, algo)
    out = bytearray(digests)
    counts = list(rejected)
    dropped: list[int] = []
    late: list[tuple[int, int]] = []
    for index, slot, start, end in deferred:
        result = normalize(bytes(memoryview(data)[start:end]), kind, default_country)
        if isinstance(result, Reject):
            status = _STATUS[result]
            counts[status - 1] += 1
            dropped.append(slot)
            late.append((index, status))
        else:
            out[slot * size : (slot + 1) * size] = h(result).digest()
    if dropped:
        keep = np.ones(len(out) // size, dtype=bool)
        keep[dropped] = False
        rows = np.frombuffer(bytes(out), dtype=np.uint8).reshape(-1, size)
        out = bytearray(rows[keep].tobytes())
        sample = sorted([*sample, *late])[:sample_cap]
    return bytes(out), (counts[0], counts[1], counts[2]), sample


# --------------------------------------------------------------------------- Python engine


def _python_hash_chunk(
    data: bytes, kind: IdType, algo: HashAlgo, sample_cap: int, default_country: str | None
) -> ChunkHashes:
    size = digest_size(kind, algo)
    template = _template(kind)
    if template is None:
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        status, digests, national = _per_line(lines, kind, algo, default_country)
        return _finish(status, digests, size, sample_cap, national)
    width, mobile = template
    status, norm = _fixed_width(data, width, mobile)
    digests = _hash_rows(_rows(norm)[status == _VALID], mobile, algo)
    return _finish(status, digests, size, sample_cap)


def _python_hash_values(
    values: Sequence[bytes],
    kind: IdType,
    algo: HashAlgo,
    sample_cap: int,
    default_country: str | None,
) -> ChunkHashes:
    size = digest_size(kind, algo)
    template = _template(kind)
    if template is None:
        status, digests, national = _per_line(values, kind, algo, default_country)
        return _finish(status, digests, size, sample_cap, national)
    width, mobile = template
    multi = [i for i, v in enumerate(values) if b"\n" in v]
    joined = b"\n".join([b"" if b"\n" in v else v for v in values] if multi else values)
    status, norm = _fixed_width(joined + b"\n" if values else b"", width, mobile)
    for i in multi:
        result = normalize(values[i], kind)
        if isinstance(result, Reject):
            status[i] = _STATUS[result]
        else:
            status[i] = _VALID
            norm[i] = np.frombuffer(result, dtype=np.uint8)
    digests = _hash_rows(_rows(norm)[status == _VALID], mobile, algo)
    return _finish(status, digests, size, sample_cap)
