"""What the Dask workers run: hash a piece of input, sort and dedupe one digest range.

Top-level functions over plain values, so that Dask can pickle them and retry them on another
worker. Hashing calls the local engine's chunk hasher (:func:`asyncsync.rules.hashing.hash_chunk`
for text blocks, :func:`~asyncsync.rules.hashing.hash_values` for a column); sorting and dedupe
call :func:`asyncsync.pipeline.dedupe.sort_unique`; parts are written by
:func:`asyncsync.pipeline.parts.write_part`. Nothing here re-states a rule of the local engine.

A hashed piece travels as a pandas frame of unsigned 64-bit columns ``d0``, ``d1``, ... (the
digest's big-endian words, so their order is the bytewise order of the digests) and a ``key``
column (its first 32 bits), which the shuffle partitions into contiguous ranges. Numeric columns
cross Dask's shuffle without a Python object per row.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from asyncsync.pipeline.dedupe import sort_unique
from asyncsync.pipeline.parts import PartInfo, PartSource, part_lines, part_name
from asyncsync.pipeline.source import BOM
from asyncsync.remote import filesystem, is_remote
from asyncsync.rules.hashing import ChunkHashes, hash_chunk, hash_values
from asyncsync.rules.limits import HashAlgo, IdType

__all__ = [
    "KEY",
    "KEY_SPACE",
    "HashSettings",
    "PieceStats",
    "column_values",
    "digest_frame",
    "empty_digest_frame",
    "hash_column_piece",
    "hash_text_piece",
    "piece_frame",
    "piece_stats",
    "run_name",
    "write_part_to_store",
    "write_run",
]

KEY: Final = "key"
"""The column the shuffle partitions by: a digest's first 32 bits, as an int64."""
KEY_SPACE: Final = 1 << 32
TMP_SUFFIX: Final = ".tmp"


@dataclass(frozen=True, slots=True)
class HashSettings:
    """What every hashing task needs to know (small, pickled into each task)."""

    id_type: IdType
    hash_algo: HashAlgo
    digest_size: int
    sample_cap: int
    default_country: str | None = None


@dataclass(frozen=True, slots=True)
class PieceStats:
    """The counts of one hashed piece; ``sample`` holds (0-based row in the piece, reason)."""

    input_index: int
    piece: int
    rows: int
    newlines: int
    valid: int
    rejected: tuple[int, int, int]
    sample: tuple[tuple[int, str], ...]
    national: int = 0


def _words(digest_size: int) -> int:
    return digest_size // 8


def empty_digest_frame(digest_size: int) -> pd.DataFrame:
    """A frame with no row and the columns of :func:`digest_frame` (Dask's ``meta``)."""
    return digest_frame(b"", digest_size)


def digest_frame(digests: bytes, digest_size: int) -> pd.DataFrame:
    """Binary digests (``digest_size`` bytes each, back to back) as the shuffled frame."""
    words = np.frombuffer(digests, dtype=">u8").reshape(-1, _words(digest_size))
    columns: dict[str, Any] = {
        f"d{j}": words[:, j].astype(np.uint64) for j in range(words.shape[1])
    }
    columns[KEY] = (words[:, 0] >> np.uint64(32)).astype(np.int64)
    return pd.DataFrame(columns)


def _frame_digests(frame: pd.DataFrame, digest_size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The inverse of :func:`digest_frame`: one digest per row of a C-contiguous uint8 matrix."""
    n, w = len(frame), _words(digest_size)
    words = np.empty((n, w), dtype=">u8")
    for j in range(w):
        words[:, j] = frame[f"d{j}"].to_numpy(dtype=np.uint64)
    return words.view(np.uint8).reshape(n, digest_size)


def _stats(hashed: ChunkHashes, input_index: int, piece: int, newlines: int) -> PieceStats:
    return PieceStats(
        input_index=input_index,
        piece=piece,
        rows=hashed.rows,
        newlines=newlines,
        valid=hashed.valid,
        rejected=hashed.rejected,
        sample=hashed.sample,
        national=hashed.national,
    )


def hash_text_piece(
    data: bytes, first: bool, input_index: int, piece: int, settings: HashSettings
) -> tuple[pd.DataFrame, PieceStats]:
    """Hash a block of whole lines of a text input (``first``: it starts the file, so a
    byte-order mark there is dropped, as the local reader does)."""
    if first and data.startswith(BOM):
        data = data[len(BOM) :]
    hashed = hash_chunk(
        data,
        id_type=settings.id_type,
        hash_algo=settings.hash_algo,
        sample_cap=settings.sample_cap,
        default_country=settings.default_country,
    )
    stats = _stats(hashed, input_index, piece, data.count(b"\n"))
    return digest_frame(hashed.digests, settings.digest_size), stats


def column_values(values: Any) -> list[bytes]:
    """A column's values as the bytes the hasher takes: text as UTF-8, binary as is, numbers
    written out in decimal, a null as an empty value."""
    arr = (
        values
        if isinstance(values, pa.Array | pa.ChunkedArray)
        else pa.array(values, from_pandas=True)
    )
    if pa.types.is_dictionary(arr.type):
        arr = (
            arr.dictionary_decode()
            if isinstance(arr, pa.Array)
            else pc.cast(arr, arr.type.value_type)
        )
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = pc.cast(arr, pa.large_string())
        arr = pc.cast(arr, pa.large_binary())
    arr = pc.fill_null(arr, pa.scalar(b"", type=arr.type))
    out: list[bytes] = arr.to_pylist()
    return out


def hash_column_piece(
    part: pd.DataFrame | pd.Series[Any],
    column: str | int | None,
    input_index: int,
    piece: int,
    settings: HashSettings,
) -> tuple[pd.DataFrame, PieceStats]:
    """Hash one partition of a DataFrame column (``column``: a name, a 1-based index, or
    None for a Series or a one-column frame)."""
    if isinstance(part, pd.DataFrame):
        if column is None:
            series = part.iloc[:, 0]
        elif isinstance(column, int):
            series = part.iloc[:, column - 1]
        else:
            series = part[column]
    else:
        series = part
    hashed = hash_values(
        column_values(series),
        id_type=settings.id_type,
        hash_algo=settings.hash_algo,
        sample_cap=settings.sample_cap,
        default_country=settings.default_country,
    )
    return digest_frame(hashed.digests, settings.digest_size), _stats(hashed, input_index, piece, 0)


def piece_frame(result: tuple[pd.DataFrame, PieceStats]) -> pd.DataFrame:
    return result[0]


def piece_stats(result: tuple[pd.DataFrame, PieceStats]) -> PieceStats:
    return result[1]


def run_name(number: int) -> str:
    """File name of the sorted unique digests of range ``number``."""
    return f"run-{number:06d}.bin"


def write_run(
    frame: pd.DataFrame,
    run_dir: str,
    digest_size: int,
    partition_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Sort and dedupe the digests of one range; write them to ``run_dir``; return one row
    (``range``, ``rows`` loaded, ``unique`` written).

    Idempotent: a retry on another worker rewrites the same bytes under a temporary name and
    renames them over the first attempt's file. Memory: about ``(5.5 * D + 16) * rows`` bytes
    (the shuffled frame, the digest matrix and :func:`sort_unique`'s working set).
    """
    if partition_info is None:
        raise ValueError("write_run needs Dask's partition_info (use map_partitions)")
    number = int(partition_info["number"])
    rows = _frame_digests(frame, digest_size)
    unique = sort_unique(rows)
    if is_remote(run_dir):
        # One PUT: the object appears whole or not at all; a retry puts the same bytes again.
        fs, path = filesystem(run_dir)
        data = np.ascontiguousarray(unique).tobytes()
        fs.pipe_file(f"{path.rstrip('/')}/{run_name(number)}", data)
    else:
        final = Path(run_dir) / run_name(number)
        tmp = final.with_name(f"{final.name}.{os.getpid()}{TMP_SUFFIX}")
        with open(tmp, "wb") as f:
            f.write(np.ascontiguousarray(unique).data)
        os.replace(tmp, final)
    return pd.DataFrame(
        {"range": [number], "rows": [len(rows)], "unique": [len(unique)]}, dtype=np.int64
    )


STORE_BLOCK_BYTES: Final = 8 * 1024 * 1024
"""Bytes of a part buffered before they go to the store (one part of a multipart upload)."""


def write_part_to_store(
    index: int, sources: list[PartSource], digest_size: int, out_url: str
) -> PartInfo:
    """Write part ``index`` into object storage at ``out_url`` (worker side), streamed.

    The lines go, MD5 computed while they are written, to a temporary object whose name is
    unique to this attempt (``part-NNNNN.txt.tmp-<hex>``); only once it is complete is it
    copied to ``part-NNNNN.txt`` (a server-side copy: the final object appears whole) and the
    temporary deleted. A retried attempt writes the same bytes under its own temporary; the
    client removes every temporary left by a killed attempt at the end of the run. ``sources``
    are run objects of the same store (or local files, for a shared ``run_dir``). Credentials
    come from the worker's environment, as for remote inputs; none is in the task.
    """
    fs, root = filesystem(out_url)
    root = root.rstrip("/")
    name = part_name(index)
    final = f"{root}/{name}"
    tmp = f"{final}{TMP_SUFFIX}-{uuid.uuid4().hex}"

    def open_source(path: str) -> Any:
        if is_remote(path):
            src_fs, src_path = filesystem(path)
            return src_fs.open(src_path, "rb", block_size=STORE_BLOCK_BYTES)
        return open(path, "rb")

    md5 = hashlib.md5()
    written = rows = 0
    out = fs.open(tmp, "wb", block_size=STORE_BLOCK_BYTES)
    try:
        for lines, n in part_lines(sources, digest_size, open_source):
            md5.update(lines)
            out.write(lines)
            written += n * (2 * digest_size + 1)
            rows += n
        out.close()  # completes the upload: only now does the temporary object exist
    except BaseException:
        try:  # abort a multipart upload; never complete a partial temporary on the way out
            out.discard()
            out.closed = True
        except Exception:
            pass
        raise
    try:
        fs.copy(tmp, final)
    finally:
        fs.rm_file(tmp)
    return PartInfo(
        index=index,
        file=name,
        path=Path(final),
        bytes=written,
        rows=rows,
        md5=md5.hexdigest(),
    )
