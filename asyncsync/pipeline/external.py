"""Inputs that are not a local text file: Parquet datasets and objects in a store, chosen by name.

:func:`external_input` is where :mod:`asyncsync.pipeline.source` learns that an input is one of
these (the text reader handles everything else: local files, stdin); :func:`column_jobs` turns
a Parquet dataset into jobs for the hashing pool; :func:`input_identity` is what the sync journal
records of such an input to recognise it on a rerun.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from asyncsync.pipeline.parquet import (
    ColumnJob,
    ParquetInput,
    RowGroupJob,
    batch_rows,
    dataset_files,
    is_parquet,
)
from asyncsync.remote import RemoteObject, is_remote

__all__ = ["External", "column_jobs", "external_input", "input_identity", "is_external"]

External = ParquetInput | RemoteObject


def is_external(name: str) -> bool:
    """Whether ``name`` is read by this module (a Parquet dataset or a URL)."""
    return is_remote(name) or is_parquet(name)


def external_input(name: str, column: str | int | None) -> External | None:
    """The Parquet dataset or remote object ``name`` stands for (checked: it exists, and a
    dataset has the column), or None for a local text file or stdin.

    A remote object that is not Parquet is read as text (plain, gzip or zstd; CSV with
    ``--column``) by the text reader. Raises ``InputError``.
    """
    if is_parquet(name):
        return ParquetInput.open(name, column)
    if is_remote(name):
        return RemoteObject.lookup(name)
    return None


async def column_jobs(
    dataset: ParquetInput, input_index: int, first_seq: int, chunk_bytes: int
) -> AsyncGenerator[ColumnJob | RowGroupJob, None]:
    """The dataset's values as pool jobs numbered from ``first_seq``, file after file: a local
    file's row groups as :class:`RowGroupJob` (the workers read them), other files' batches,
    read here on a thread, as :class:`ColumnJob`."""
    seq, rows = first_seq, 0
    streamed: list[Any] = []  # consecutive files the parent reads
    files = list(dataset.files)
    for i, f in enumerate(files):
        plan = await asyncio.to_thread(dataset.row_group_plan, f, chunk_bytes)
        if plan is None:
            streamed.append(f)
            if i + 1 < len(files):
                continue
        if streamed:
            batches = dataset.batches(chunk_bytes, streamed)
            streamed = []
            done = object()
            try:
                while (arrays := await asyncio.to_thread(next, batches, done)) is not done:
                    assert isinstance(arrays, tuple)
                    yield ColumnJob(seq, input_index, dataset.name, rows, arrays)
                    rows += sum(len(a) for a in arrays)
                    seq += 1
            finally:
                await asyncio.to_thread(batches.close)
        for groups, group_rows in plan or ():
            assert f.local is not None
            yield RowGroupJob(
                seq,
                input_index,
                dataset.name,
                rows,
                f.name,
                f.local,
                dataset.column,
                groups,
                batch_rows(chunk_bytes),
            )
            rows += group_rows
            seq += 1


def input_identity(name: str) -> dict[str, Any]:
    """The journal's record of an external input: a remote object's ETag/version/size/mtime,
    or a dataset's files with theirs. Raises ``InputError`` when it is missing."""
    if is_parquet(name):
        shown, files = dataset_files(name)
        return {"path": shown, "files": [f.identity() for f in files]}
    return RemoteObject.lookup(name).identity()
