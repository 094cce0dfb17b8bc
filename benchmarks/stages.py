"""Where ``prepare``'s time goes: each stage of the pipeline alone, in one process, CPU seconds.

    .venv/bin/python benchmarks/stages.py benchmarks/data/maid-10000000.txt --kind maid

Runs the worker-side functions of ``prepare`` one stage at a time over the whole input, in one
process per engine (``ASYNCSYNC_ENGINE`` set for it; no pool, no pipelining), and reports CPU
seconds (``time.process_time``) and ns per input row for each stage: read (plain-file byte
ranges; for a ``.parquet`` file, its row groups decoded into record batches as the workers read
them), hash (normalize + validate + hash), spill (bucketing the digests), merge (sort + exact
dedupe), parts (hex, MD5, write).
CPU time, not wall time, so that a busy machine disturbs the figures less; ``prepare`` runs
these stages on every core at once, so its wall time is about their sum over the core count
plus start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from asyncsync.pipeline.dedupe import (
    SpillRun,
    group_sources,
    merge_group,
    plan_groups,
    spill_ranges,
    spill_stem,
)
from asyncsync.pipeline.parquet import (
    PARQUET_SUFFIXES,
    ParquetInput,
    RowGroupJob,
    column_arrays,
    column_hashes,
    joined_hashes,
)
from asyncsync.pipeline.parts import PartSource, rows_per_part, write_part
from asyncsync.pipeline.source import RangeJob, read_range
from asyncsync.pipeline.worker import init_worker
from asyncsync.rules.engine import ENGINE_ENV, active_engine
from asyncsync.rules.hashing import ChunkHashes, hash_chunk
from asyncsync.rules.limits import DEFAULT_MAX_FILE_BYTES

T = TypeVar("T")
CHUNK = 4 * 1024 * 1024
BITS = 10


def timed(totals: dict[str, float], key: str, fn: Callable[[], T]) -> T:
    start = time.process_time()
    out = fn()
    totals[key] = totals.get(key, 0.0) + time.process_time() - start
    return out


def _hashed(src: Path, kind: str, algo: str, totals: dict[str, float]) -> Iterator[ChunkHashes]:
    """The input's chunks, read and hashed (timed as "read" and "hash"): byte ranges of a text
    file, or the record batches of a Parquet file's row groups as the workers read them."""
    if src.suffix in PARQUET_SUFFIXES:
        dataset = ParquetInput.open(str(src), None)
        for f in dataset.files:
            for groups, _ in dataset.row_group_plan(f, CHUNK) or ():
                assert f.local is not None
                job = RowGroupJob(0, 0, f.name, 0, f.name, f.local, dataset.column, groups)
                arrays = timed(totals, "read", lambda job=job: list(column_arrays(job)))  # type: ignore[misc]
                yield timed(
                    totals,
                    "hash",
                    lambda a=arrays: joined_hashes(  # type: ignore[misc]
                        [h for h, _ in column_hashes(a, id_type=kind, hash_algo=algo)],
                        id_type=kind,
                        hash_algo=algo,
                    ),
                )
        return
    size = os.path.getsize(src)
    for seq, start in enumerate(range(0, size, CHUNK)):
        job = RangeJob(seq, 0, str(src), str(src), start, min(start + CHUNK, size))
        data = timed(totals, "read", lambda job=job: read_range(job))  # type: ignore[misc]
        yield timed(
            totals,
            "hash",
            lambda data=data: hash_chunk(data, id_type=kind, hash_algo=algo),  # type: ignore[misc]
        )


def run(src: Path, kind: str, algo: str, work: Path) -> dict[str, object]:
    engine = active_engine()
    totals: dict[str, float] = {}
    rows = 0
    spills: list[SpillRun] = []
    digest_size = 32 if algo == "sha256" else 16
    stem = spill_stem(str(work))
    for hashed in _hashed(src, kind, algo, totals):
        rows += hashed.rows
        counts, offsets = timed(
            totals,
            "spill",
            lambda h=hashed: spill_ranges(h.digests, h.digest_size, BITS, stem),  # type: ignore[misc]
        )
        spills.append(SpillRun(stem, counts, offsets))
    total_counts = sum((r.counts.astype(np.int64) for r in spills), np.zeros(1 << BITS, np.int64))
    groups = plan_groups(total_counts, 1_000_000)
    uniques: list[tuple[str, int]] = []
    for g, sources in enumerate(group_sources(spills, groups, digest_size, BITS)):
        out = str(work / f"unique-{g:06d}.bin")
        _, unique = timed(
            totals,
            "merge",
            lambda s=sources, o=out: merge_group(s, digest_size, o),  # type: ignore[misc]
        )
        uniques.append((out, unique))
    per_part = rows_per_part(DEFAULT_MAX_FILE_BYTES, digest_size)
    parts_dir = work / "parts"
    parts_dir.mkdir()
    runs: list[PartSource] = []
    index, held = 1, 0
    for path, unique in uniques:
        first = 0
        while first < unique:
            take = min(unique - first, per_part - held)
            runs.append(PartSource(path, first, first + take))
            first += take
            held += take
            if held == per_part:
                timed(
                    totals,
                    "parts",
                    lambda r=list(runs), i=index: write_part(  # type: ignore[misc]
                        i, r, digest_size, str(parts_dir)
                    ),
                )
                runs, index, held = [], index + 1, 0
    if runs:
        timed(
            totals,
            "parts",
            lambda: write_part(index, runs, digest_size, str(parts_dir)),
        )
    total = sum(totals.values())
    return {
        "engine": engine,
        "kind": kind,
        "rows": rows,
        "cpu_s": {k: round(v, 3) for k, v in totals.items()} | {"total": round(total, 3)},
        "ns_per_row": {k: round(v / rows * 1e9) for k, v in totals.items()}
        | {"total": round(total / rows * 1e9)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--kind", default="maid")
    parser.add_argument("--hash", default="sha256")
    parser.add_argument("--engines", default="native,python")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.in_process:
        print(f"load average before: {os.getloadavg()}", flush=True)
        for engine in args.engines.split(","):
            cmd = [sys.executable, __file__, str(args.input), "--kind", args.kind]
            cmd += ["--hash", args.hash, "--in-process"]
            subprocess.run(cmd, check=True, env={**os.environ, ENGINE_ENV: engine})
        print(f"load average after: {os.getloadavg()}")
        return
    init_worker()  # the heap settings of a pool worker
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="stages-"))
    try:
        print(json.dumps(run(args.input, args.kind, args.hash, work)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
