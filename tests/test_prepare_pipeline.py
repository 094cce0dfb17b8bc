"""prepare() end to end on real files: exact dedupe, caps, MD5s, counts, formats, determinism."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import zstandard

import asyncsync
from asyncsync.errors import InputError, NoValidIdsError, StateError, UsageError
from asyncsync.events import ChunkHashed, Event, PartWritten
from asyncsync.pipeline import PartInfo, PrepareOptions, count, prepare, read_manifest
from asyncsync.rules.ids import Reject, hash_id, normalize

ZERO = "00000000-0000-0000-0000-000000000000"


def maids(n: int, seed: int = 1) -> list[str]:
    return [str(uuid.UUID(int=(seed * 1_000_003 + i) * 2_654_435_761 % 2**128)) for i in range(n)]


def expected_digests(lines: list[bytes], kind: str = "maid", algo: str = "sha256") -> list[bytes]:
    out = set()
    for line in lines:
        result = normalize(line, kind)
        if not isinstance(result, Reject):
            out.add(hash_id(result, kind, algo))
    return sorted(out)


def part_lines(result: asyncsync.PrepareResult) -> list[bytes]:
    out: list[bytes] = []
    for part in result.parts:
        out.extend(part.path.read_bytes().splitlines())
    return out


def noisy_lines(n: int) -> list[bytes]:
    ids = maids(n)
    lines = [s.encode() for s in ids]
    lines += [s.upper().encode() for s in ids[: n // 10]]  # duplicates differing in case
    lines += [b"", b"   ", b"nope", ZERO.encode(), ids[0][:-1].encode(), b"  " + ids[1].encode()]
    return lines


async def test_union_of_parts_is_exactly_the_valid_digests_each_once(tmp_path: Path) -> None:
    lines = noisy_lines(3000)
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    result = await prepare(src, out_dir=tmp_path / "out", max_file_bytes=20_000, chunk_bytes=8192)
    got = part_lines(result)
    assert got == expected_digests(lines)  # sorted, unique, exactly the valid set
    assert len(got) == len(set(got)) == 3000
    assert all(len(p.path.read_bytes()) <= 20_000 for p in result.parts)
    assert len(result.parts) == -(-3000 * 65 // (20_000 // 65 * 65))


async def test_tiny_max_file_bytes_still_caps_every_part(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(maids(40)))
    r = await prepare(src, out_dir=tmp_path / "out", max_file_bytes=200)
    assert [p.rows for p in r.parts] == [3] * 13 + [1]
    assert all(p.bytes == p.path.stat().st_size <= 200 for p in r.parts)
    assert [p.file for p in r.parts][:2] == ["part-00001.txt", "part-00002.txt"]


async def test_row_counts_follow_the_contract(tmp_path: Path) -> None:
    lines = noisy_lines(500)
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines))  # last line without a line end still counts
    r = await prepare(src, out_dir=tmp_path / "out")
    assert r.rows_read == len(lines)
    assert r.rejected == {"empty": 2, "malformed": 2, "zero_id": 1}
    assert r.rows_invalid == 5
    assert r.rows_valid == r.rows_read - r.rows_invalid
    assert r.duplicates == 50 + 1  # upper-cased copies and the padded copy of ids[1]
    assert r.rows_written == r.rows_valid - r.duplicates == 500
    assert sum(p.rows for p in r.parts) == r.rows_written
    assert [(x.line, x.reason) for x in r.rejected_sample] == [
        (551, "empty"),
        (552, "empty"),
        (553, "malformed"),
        (554, "zero_id"),
        (555, "malformed"),
    ]


async def test_manifest_md5s_and_sizes_equal_the_files(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(maids(2000)) + "\n")
    r = await prepare(src, out_dir=tmp_path / "out", max_file_bytes=30_000)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["parts"]) == len(r.parts) > 1
    for entry in manifest["parts"]:
        data = (tmp_path / "out" / entry["file"]).read_bytes()
        assert entry["md5"] == hashlib.md5(data).hexdigest()
        assert entry["bytes"] == len(data) <= 30_000
        assert entry["rows"] == data.count(b"\n")
    for key in (
        "calculate_type",
        "rows_read",
        "rows_valid",
        "rows_invalid",
        "rejected",
        "duplicates",
        "rows_written",
    ):
        assert key in manifest
    assert manifest["calculate_type"] == "FIRST_SHA256"
    again = read_manifest(tmp_path / "out")
    assert again.parts == r.parts
    assert again.rows_written == r.rows_written == 2000


async def test_several_inputs_gzip_zstd_and_crlf_bom_dedupe_across_files(tmp_path: Path) -> None:
    ids = maids(1200)
    a, b, c = tmp_path / "a.txt", tmp_path / "b.data", tmp_path / "c.zst"
    a.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(ids[:500]).encode() + b"\r\n")
    b.write_bytes(gzip.compress("\n".join(ids[400:900]).encode()))
    c.write_bytes(zstandard.ZstdCompressor().compress("\n".join(ids[800:]).upper().encode()))
    r = await prepare(a, b, c, out_dir=tmp_path / "out", chunk_bytes=4096)
    assert part_lines(r) == expected_digests([s.encode() for s in ids])
    assert r.rows_read == 500 + 500 + 400
    assert r.duplicates == 100 + 100
    assert r.rows_invalid == 0


async def test_csv_column_by_name_and_by_index_with_quoted_multiline_records(
    tmp_path: Path,
) -> None:
    ids = maids(300)
    rows = ["name;Device ID;country"]
    for i, s in enumerate(ids):
        name = f'"line one\nline two {i}"' if i % 10 == 0 else f'"Doe; J{i}"'
        rows.append(f"{name};{s.upper() if i % 2 else s};DE")
    rows.append(";;")  # empty ID field
    rows.append("short")  # record lacking the column
    src = tmp_path / "in.csv"
    src.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    expected = expected_digests([s.encode() for s in ids])
    by_name = await prepare(src, out_dir=tmp_path / "n", column="device id", chunk_bytes=4096)
    by_index = await prepare(src, out_dir=tmp_path / "i", column="2", chunk_bytes=4096)
    for r in (by_name, by_index):
        assert part_lines(r) == expected
        assert r.rows_read == 302  # header excluded, multi-line records count once
        assert r.rejected == {"empty": 1, "malformed": 1, "zero_id": 0}
    # Physical line numbers: 300 records, 30 of them two lines long, after the header.
    assert [x.line for x in by_name.rejected_sample] == [332, 333]


async def test_csv_without_header_by_index_and_other_delimiters(tmp_path: Path) -> None:
    ids = maids(50)
    for delim in ("\t", "|", ","):
        src = tmp_path / f"in{ord(delim)}.csv"
        src.write_text("\n".join(f"x{delim}{s}" for s in ids) + "\n")
        r = await prepare(src, out_dir=tmp_path / f"o{ord(delim)}", column=2)
        assert r.rows_read == 50
        assert part_lines(r) == expected_digests([s.encode() for s in ids])


async def test_stdin_dash_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = maids(100)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(ids) + "\n")
    stdin = type("Stdin", (), {"buffer": io.BytesIO(src.read_bytes())})()
    monkeypatch.setattr("sys.stdin", stdin)
    r = await prepare("-", out_dir=tmp_path / "out")
    assert part_lines(r) == expected_digests([s.encode() for s in ids])
    assert r.rejected_sample == ()


async def test_same_input_gives_identical_parts_whatever_the_workers_and_chunks(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(noisy_lines(4000)))
    runs = []
    for i, (workers, chunk) in enumerate([(1, 1 << 20), (2, 4096), (3, 10_000)]):
        r = await prepare(
            src,
            out_dir=tmp_path / f"o{i}",
            workers=workers,
            chunk_bytes=chunk,
            max_file_bytes=50_000,
            merge_rows=700,
            bucket_bits=4 + i,
        )
        runs.append([(p.file, p.bytes, p.md5) for p in r.parts])
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0]) > 2


async def test_on_part_is_awaited_in_index_order_and_events_are_reported(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(maids(3000)))
    seen: list[PartInfo] = []
    events: list[Event] = []

    async def on_part(part: PartInfo) -> None:
        assert part.path.exists()
        assert not (tmp_path / "out" / "manifest.json").exists()
        seen.append(part)

    r = await prepare(
        src,
        out_dir=tmp_path / "out",
        on_part=on_part,
        reporter=events.append,
        max_file_bytes=10_000,
        chunk_bytes=8192,
    )
    assert [p.index for p in seen] == list(range(1, len(r.parts) + 1))
    assert tuple(seen) == r.parts
    written = [e for e in events if isinstance(e, PartWritten)]
    assert [e.index for e in written] == [p.index for p in r.parts]
    assert sum(e.rows for e in events if isinstance(e, ChunkHashed)) == r.rows_read


async def test_the_spill_is_freed_early_and_unique_runs_reuse_a_bounded_set_of_files(
    tmp_path: Path,
) -> None:
    """Temporary files do not pile up: at 100 M rows the spill and the unique runs would be
    about 3 GB each, beside the parts. Once every group is merged the spill runs go; a unique
    run's file takes a later run once no part still to be written reads it, so however many
    groups there are, at most 2 x chunks_in_flight unique-run files ever exist."""
    lines = noisy_lines(6000)
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    held: dict[int, list[str]] = {}
    seen: set[str] = set()

    async def on_part(part: PartInfo) -> None:
        (spill,) = out.glob(".prepare-spill-*")
        held[part.index] = sorted(f.name for f in spill.iterdir())
        seen.update(n for n in held[part.index] if n.startswith("unique-"))

    r = await prepare(
        src,
        out_dir=out,
        on_part=on_part,
        max_file_bytes=65 * 700,
        chunk_bytes=8192,
        merge_rows=300,
        chunks_in_flight=3,
        workers=2,
    )
    assert len(r.parts) >= 8
    assert r.rows_valid >= 15 * 300  # about 15 merge groups or more: many more than files
    assert not [n for n in held[len(r.parts)] if not n.startswith("unique-")]  # spill gone
    assert 2 <= len(seen) <= 6
    assert part_lines(r) == expected_digests(lines)


async def test_each_spill_range_is_deleted_once_the_merges_are_past_it(tmp_path: Path) -> None:
    """The merges go through the buckets in order, so a range's spill files go while later
    groups still wait to merge: when the first part reaches ``on_part`` (which holds back the
    rest: parts not collected keep the pool's places), the first range's files are deleted
    and the last range's are still there."""
    lines = noisy_lines(6000)
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    at_first: dict[str, list[str]] = {}

    async def on_part(part: PartInfo) -> None:
        if part.index != 1:
            return
        (spill,) = out.glob(".prepare-spill-*")
        for _ in range(200):  # the deletion runs on a thread: give it a moment
            if not list(spill.glob("w*-r00.bin")):
                break
            await asyncio.sleep(0.05)
        at_first["files"] = sorted(f.name for f in spill.iterdir())

    r = await prepare(
        src,
        out_dir=out,
        on_part=on_part,
        max_file_bytes=65 * 200,
        chunk_bytes=8192,
        merge_rows=300,  # one bucket a group: 16 groups, one range each
        bucket_bits=4,
        chunks_in_flight=2,
        workers=2,
    )
    files = at_first["files"]
    assert not [n for n in files if n.endswith("-r00.bin")], files
    assert [n for n in files if n.endswith("-r15.bin")], files
    assert len(r.parts) >= 20
    assert part_lines(r) == expected_digests(lines)
    assert not list(out.glob(".prepare-spill-*"))


async def test_a_part_spanning_more_unique_runs_than_files_kept_still_completes(
    tmp_path: Path,
) -> None:
    """Groups of a single unique ID each (every ID repeated, tiny merge groups): one part
    needs far more runs than the files a merge waits for, so merges take new files rather
    than wait for a part that cannot be written yet."""
    ids = [m.encode() for m in maids(40)]
    lines = [i for i in ids for _ in range(30)]
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    r = await asyncio.wait_for(
        prepare(
            src,
            out_dir=tmp_path / "out",
            merge_rows=20,
            bucket_bits=16,
            chunks_in_flight=2,
            workers=2,
            chunk_bytes=4096,
        ),
        timeout=60,
    )
    assert len(r.parts) == 1
    assert r.rows_written == 40
    assert part_lines(r) == expected_digests(ids)


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache (util-linux's fincore)."""
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[0])


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
@pytest.mark.parametrize("workers", [1, 2])
async def test_a_large_output_is_dropped_from_the_page_cache_as_its_parts_finish(
    tmp_path: Path, workers: int
) -> None:
    lines = noisy_lines(30_000)
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    opts = {"max_file_bytes": 200_000, "chunk_bytes": 64 * 1024, "workers": workers}
    kept = await prepare(src, out_dir=tmp_path / "kept", drop_behind_bytes=None, **opts)
    if sum(resident_bytes(p.path) for p in kept.parts) == 0:
        pytest.skip("this file system keeps no written page in the page cache")
    # About 2 MB of parts: over a limit of 1 MB, so every part is dropped once finished.
    dropped = await prepare(src, out_dir=tmp_path / "dropped", drop_behind_bytes=1 << 20, **opts)
    assert [(p.bytes, p.rows, p.md5) for p in dropped.parts] == [
        (p.bytes, p.rows, p.md5) for p in kept.parts
    ]
    deadline = asyncio.get_running_loop().time() + 20
    while any(resident_bytes(p.path) for p in dropped.parts):
        assert asyncio.get_running_loop().time() < deadline, "parts still in the page cache"
        await asyncio.sleep(0.1)
    # Below the limit nothing is dropped: the first run's parts stay cached.
    assert all(resident_bytes(p.path) for p in kept.parts)
    assert part_lines(dropped) == expected_digests(lines)  # read back whole (cached again)


async def test_stale_parts_of_an_earlier_run_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("part-00007.txt", "part-00002.txt.tmp", "manifest.json"):
        (out / name).write_text("stale\n")
    (out / "keep.txt").write_text("mine\n")
    src = tmp_path / "in.txt"
    src.write_text("\n".join(maids(10)))
    r = await prepare(src, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "manifest.json", "part-00001.txt"]
    assert read_manifest(out).parts == r.parts


async def test_email_and_phone_and_prehashed_inputs(tmp_path: Path) -> None:
    emails = [b"JaneDoe+x@Gmail.com", b"janedoe@gmail.com", b"bad@.com", b"a@b.co"]
    src = tmp_path / "e.txt"
    src.write_bytes(b"\n".join(emails))
    r = await prepare(src, out_dir=tmp_path / "e", id_type="email")
    assert r.calculate_type == asyncsync.CalculateType.EMAIL_SHA256
    assert part_lines(r) == expected_digests(emails, "email")
    assert (r.duplicates, r.rows_invalid) == (1, 1)
    hashed = [hashlib.md5(s.encode()).hexdigest().upper().encode() for s in maids(20)]
    src2 = tmp_path / "h.txt"
    src2.write_bytes(b"\n".join(hashed))
    r2 = await prepare(src2, out_dir=tmp_path / "h", id_type="md5", hash_algo="md5")
    assert r2.calculate_type == asyncsync.CalculateType.FIRST_MD5
    assert part_lines(r2) == sorted(h.lower() for h in hashed)


async def test_library_errors_are_typed_and_leave_no_manifest(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("nothing valid\n\n")
    with pytest.raises(NoValidIdsError, match=r"in\.txt: no valid ID in 2 lines"):
        await prepare(src, out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
    with pytest.raises(InputError, match=r"missing\.txt: no such file"):
        await prepare(tmp_path / "missing.txt", out_dir=tmp_path / "out")
    with pytest.raises(UsageError, match="sha256"):
        await prepare(src, out_dir=tmp_path / "out", id_type="email", hash_algo="md5")
    with pytest.raises(UsageError):
        PrepareOptions(max_file_bytes=10)
    with pytest.raises(StateError):
        read_manifest(tmp_path / "out")


def test_fingerprint_names_only_what_changes_the_output() -> None:
    a = PrepareOptions(id_type="auto", workers=1, chunk_bytes=1 << 20)  # type: ignore[arg-type]
    b = PrepareOptions(id_type="maid", workers=2)  # type: ignore[arg-type]
    assert a.fingerprint() == b.fingerprint()
    assert PrepareOptions(column="3").fingerprint()["column"] == 3
    assert PrepareOptions(max_file_bytes=1000).fingerprint() != a.fingerprint()
    assert os.cpu_count() is None or a.resolved_workers() == 1


@pytest.mark.parametrize("max_file_bytes", [65 * 7, 20_000, 65 * 3000, 1_000_000])
async def test_count_gives_prepares_counts_and_parts_and_writes_no_file(
    tmp_path: Path, max_file_bytes: int
) -> None:
    lines = [*noisy_lines(3000), b"0612345678"]
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    opts = PrepareOptions(max_file_bytes=max_file_bytes, chunk_bytes=8192, merge_rows=700)
    work = tmp_path / "work"
    work.mkdir()
    events: list[Event] = []

    seen: set[str] = set()

    def watch(event: Event) -> None:
        events.append(event)
        seen.update(p.name for p in work.rglob("*") if p.is_file())

    counted = await count(src, work_dir=work, reporter=watch, options=opts)
    assert not [e for e in events if isinstance(e, PartWritten)]
    assert seen and all(re.fullmatch(r"w\d+-r\d\d\.bin", n) for n in seen), seen  # spill only
    assert list(work.iterdir()) == []  # the spill is gone
    written = await prepare(src, out_dir=tmp_path / "out", options=opts)
    assert [(p.index, p.file, p.rows, p.bytes) for p in counted.parts] == [
        (p.index, p.file, p.rows, p.bytes) for p in written.parts
    ]
    assert counted.bytes_written == written.bytes_written
    for name in (
        "calculate_type", "rows_read", "rows_valid", "rows_invalid", "rejected", "duplicates",
        "rows_written", "rejected_sample", "national_phones",
    ):  # fmt: skip
        assert getattr(counted, name) == getattr(written, name), name


async def test_count_spills_into_the_spill_dir_and_removes_it(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(noisy_lines(500)) + b"\n")
    spill, work = tmp_path / "spill", tmp_path / "work"
    spilled: list[list[Path]] = []

    def watch(event: Event) -> None:
        if isinstance(event, ChunkHashed):
            spilled.append(list(spill.rglob("*")))

    counted = await count(src, work_dir=work, reporter=watch, spill_dir=spill, chunk_bytes=4096)
    assert counted.rows_written == 500
    assert any(spilled) and list(spill.iterdir()) == []
    assert not work.exists()


async def test_count_of_already_hashed_input_uses_the_implied_digest(tmp_path: Path) -> None:
    lines = [hashlib.md5(f"id{i}".encode()).hexdigest().encode() for i in range(400)]
    src = tmp_path / "md5.txt"
    src.write_bytes(b"\n".join([*lines, *lines[:50], b"zz"]) + b"\n")
    opts = PrepareOptions(id_type="md5", max_file_bytes=33 * 150)
    counted = await count(src, work_dir=tmp_path / "work", options=opts)
    written = await prepare(src, out_dir=tmp_path / "out", options=opts)
    assert counted.calculate_type == written.calculate_type
    assert [(p.rows, p.bytes) for p in counted.parts] == [(p.rows, p.bytes) for p in written.parts]
    assert (counted.rows_written, counted.duplicates) == (written.rows_written, 50) == (400, 50)
