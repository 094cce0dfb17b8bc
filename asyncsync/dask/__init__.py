"""``prepare`` on a Dask cluster (extra ``asyncsync[dask]``): hashing and exact dedupe run where
the data is, and the output directory holds the same parts and manifest as the local engine's.

    from distributed import Client
    import asyncsync.dask

    result = asyncsync.dask.prepare(
        "s3://lake/exports/*.parquet", column="maid", out_dir="/shared/out",
        client=Client("tcp://scheduler:8786"),
    )

Then ``asyncsync sync --prepared /shared/out ...`` delivers it from one process.
See :func:`asyncsync.dask.prepare.prepare` for the options and the memory per worker.
"""

from __future__ import annotations

from asyncsync.dask.prepare import DEFAULT_CHUNK_BYTES, DEFAULT_RANGE_ROWS, prepare

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_RANGE_ROWS", "prepare"]
