"""The dedupe core: exact, sorted, and independent of how the rows were chunked or bucketed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asyncsync.pipeline import dedupe
from asyncsync.pipeline.dedupe import (
    SPILL_RANGES,
    MergeSource,
    SpillRun,
    bucket_counts_to_offsets,
    group_sources,
    merge_group,
    plan_groups,
    range_buckets,
    range_path,
    ranges_done,
    read_spilled,
    sort_unique,
    spill_chunk,
    spill_ranges,
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


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize(("bits", "size"), [(1, 32), (4, 32), (6, 16), (10, 32), (16, 16)])
def test_range_spills_of_several_writers_merge_into_the_global_sorted_unique_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str, bits: int, size: int
) -> None:
    """Chunks spilled by three writers into their own range files (runs of uneven lengths,
    some empty), merged group by group: the sorted unique digests, every row loaded once."""
    if engine == "python":
        monkeypatch.setattr(dedupe, "native_for", lambda chosen=None: None)
    rng = np.random.default_rng(bits * 100 + size)
    pool = rng.integers(0, 256, (5000, size), dtype=np.uint8)
    pool[:50, :2] = 0  # a crowded first bucket
    runs: list[SpillRun] = []
    chunks = []
    for i in range(12):
        chunk = pool[rng.integers(0, 5000, int(rng.integers(0, 1500)))]
        stem = str(tmp_path / f"w{i % 3}")
        counts, offsets = spill_ranges(chunk.tobytes(), size, bits, stem)
        assert counts.sum() == len(chunk) and len(offsets) == ranges_done(1 << bits, bits)
        runs.append(SpillRun(stem, counts, offsets))
        chunks.append(chunk)
    # Each run reads back as the chunk grouped by bucket (stable), from its writer's files.
    for run, chunk in zip(runs, chunks, strict=True):
        back = read_spilled([run], size, bits)
        rows = np.frombuffer(back, dtype=np.uint8).reshape(-1, size)
        assert sorted(map(bytes, rows)) == sorted(map(bytes, chunk))
    files = {p.name for p in tmp_path.iterdir()}
    assert files <= {f"w{w}-r{r:02d}.bin" for w in range(3) for r in range(SPILL_RANGES)}
    totals = np.sum([r.counts for r in runs], axis=0, dtype=np.int64)
    groups = plan_groups(totals, 700)
    stream, loaded = b"", 0
    for g, sources in enumerate(group_sources(runs, groups, size, bits)):
        out = tmp_path / f"u{g}.bin"
        n, _ = merge_group(sources, size, str(out))
        loaded += n
        stream += out.read_bytes()
    assert loaded == sum(len(c) for c in chunks)
    expected = sorted({bytes(r) for c in chunks for r in c})
    assert [stream[i : i + size] for i in range(0, len(stream), size)] == expected


def test_a_range_is_done_once_the_merges_are_past_its_last_bucket() -> None:
    assert range_buckets(10) == 64 and range_buckets(4) == 1 and range_buckets(2) == 1
    assert [ranges_done(last, 10) for last in (1, 63, 64, 65, 127, 128, 1023)] == [
        0,
        0,
        1,
        1,
        1,
        2,
        15,
    ]
    assert ranges_done(1024, 10) == SPILL_RANGES
    assert ranges_done(4, 2) == 4  # fewer buckets than ranges: one range a bucket
    assert ranges_done(3, 2) == 3
    assert range_path("/s/w7", 3) == "/s/w7-r03.bin"
