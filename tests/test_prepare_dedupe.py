"""The dedupe core: exact, sorted, and independent of how the rows were chunked or bucketed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asyncsync.pipeline.dedupe import (
    MergeSource,
    bucket_counts_to_offsets,
    merge_group,
    plan_groups,
    sort_unique,
    spill_chunk,
)


@pytest.mark.parametrize("size", [32, 16])
def test_sort_unique_orders_by_every_byte_when_leading_words_collide(size: int) -> None:
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (3000, size), dtype=np.uint8)
    base[:200, :8] = 7  # same leading word, different tails
    rows = base[rng.integers(0, 3000, 9000)]
    got = [bytes(r) for r in sort_unique(rows)]
    assert got == sorted({bytes(r) for r in rows})


def test_spill_then_merge_by_groups_gives_the_global_sorted_unique_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    pool = rng.integers(0, 256, (4000, 32), dtype=np.uint8)
    chunks = [pool[rng.integers(0, 4000, 2500)] for _ in range(3)]
    counts, paths = [], []
    for i, chunk in enumerate(chunks):
        path = str(tmp_path / f"c{i}.bin")
        counts.append(spill_chunk(chunk.tobytes(), 32, 6, path))
        paths.append(path)
    totals = np.sum(counts, axis=0, dtype=np.int64)
    groups = plan_groups(totals, 900)
    assert len(groups) > 3 and groups[0][0] == 0 and groups[-1][1] == 64
    stream = b""
    loaded = 0
    for g, (first, last) in enumerate(groups):
        sources = [
            MergeSource(p, int(bucket_counts_to_offsets(c)[first]) * 32, tuple(c[first:last]))
            for p, c in zip(paths, counts, strict=True)
        ]
        out = tmp_path / f"u{g}.bin"
        n, _ = merge_group(sources, 32, str(out))
        loaded += n
        stream += out.read_bytes()
    expected = sorted({bytes(r) for chunk in chunks for r in chunk})
    assert loaded == 7500
    assert [stream[i : i + 32] for i in range(0, len(stream), 32)] == expected
