"""Parquet inputs give exactly what the same IDs as a text file give (the oracle): the same
parts, MD5s, row counts and rejected line numbers, for every layout a writer may choose."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asyncsync.errors import InputError
from asyncsync.pipeline import PrepareResult, prepare
from asyncsync.pipeline.parquet import ColumnJob, column_lines

SMALL_CHUNK = 4096  # many batches (and many pool jobs) even for a few thousand rows


def export_values(seed: int, n: int) -> list[str | None]:
    """Mobile IDs as an export holds them: mixed case, duplicates, nulls, blanks, padding,
    garbage, zero IDs and values holding a line end."""
    rng = random.Random(seed)
    out: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append(None)
        elif r < 0.08:
            out.append("")
        elif r < 0.11:
            out.append(f"{uuid.UUID(int=rng.getrandbits(128))}\nsecond-line")
        elif r < 0.13:
            out.append("not-an-id")
        elif r < 0.14:
            out.append("00000000-0000-0000-0000-000000000000")
        elif r < 0.25 and out:
            out.append(out[rng.randrange(len(out))])
        else:
            value = str(uuid.UUID(int=rng.getrandbits(128)))
            value = value.upper() if rng.random() < 0.4 else value
            out.append(f"  {value} " if rng.random() < 0.05 else value)
    return out


def as_text(values: list[str | None] | list[bytes | None], path: Path) -> Path:
    """The oracle: the same values one per line; a null is a blank line, a value holding a line
    end is written as one malformed line (it must not become two)."""
    with path.open("wb") as f:
        for v in values:
            raw = v.encode() if isinstance(v, str) else (v or b"")
            f.write((b"bad value" if b"\n" in raw else raw) + b"\n")
    return path


async def run(inputs: list[Path | str], out: Path, **options: Any) -> PrepareResult:
    options.setdefault("workers", 1)
    options.setdefault("chunk_bytes", SMALL_CHUNK)
    return await prepare(*inputs, out_dir=out, **options)


def same_output(a: PrepareResult, b: PrepareResult) -> None:
    assert [(p.file, p.bytes, p.rows, p.md5) for p in a.parts] == [
        (p.file, p.bytes, p.rows, p.md5) for p in b.parts
    ]
    for key in ("rows_read", "rows_valid", "rows_invalid", "rejected", "duplicates"):
        assert getattr(a, key) == getattr(b, key), key
    assert a.rows_written == b.rows_written
    assert [(r.line, r.reason) for r in a.rejected_sample] == [
        (r.line, r.reason) for r in b.rejected_sample
    ]


@pytest.mark.parametrize(
    ("arrow_type", "dictionary", "row_group_size"),
    [
        (pa.string(), False, 1_000_000),
        (pa.string(), True, 997),
        (pa.large_string(), False, 64),
        (pa.large_string(), True, 1),
        (pa.binary(), False, 333),
        (pa.binary(), True, 5000),
        (pa.large_binary(), False, 2048),
    ],
)
async def test_parquet_column_gives_what_the_same_ids_as_text_give(
    tmp_path: Path, arrow_type: pa.DataType, dictionary: bool, row_group_size: int
) -> None:
    values = export_values(1, 3000 if row_group_size == 1 else 12_000)
    binary = pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type)
    cells = [v.encode() if binary and v is not None else v for v in values]
    array = pa.array(cells, type=arrow_type)
    if dictionary:
        array = array.dictionary_encode()
    table = pa.table({"row": pa.array(range(len(values))), "idfa": array})
    pq.write_table(table, tmp_path / "export.parquet", row_group_size=row_group_size)

    from_parquet = await run(
        [tmp_path / "export.parquet"], tmp_path / "pq", column="idfa", workers=2
    )
    from_text = await run([as_text(values, tmp_path / "export.txt")], tmp_path / "txt")

    same_output(from_parquet, from_text)
    assert from_parquet.rows_read == len(values)
    assert from_parquet.rejected["empty"] == sum(1 for v in values if not (v or "").strip())


async def test_dataset_directory_and_glob_read_files_in_path_order_as_one_input(
    tmp_path: Path,
) -> None:
    values = export_values(2, 9000)
    data = tmp_path / "dataset"
    data.mkdir()
    bounds = [0, 1000, 1001, 4500, 9000]  # one file of a single row
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        table = pa.table({"id": pa.array(values[lo:hi], pa.string()).dictionary_encode()})
        pq.write_table(table, data / f"part-{i:05d}.snappy.parquet", row_group_size=250 + i)
    (data / "_SUCCESS").write_bytes(b"")  # what Spark leaves beside the files
    (data / ".part-00000.snappy.parquet.crc").write_bytes(b"\x00\x01")

    from_dir = await run([data], tmp_path / "dir")
    from_glob = await run([str(data / "part-*.parquet")], tmp_path / "glob")
    from_text = await run([as_text(values, tmp_path / "all.txt")], tmp_path / "txt")

    same_output(from_dir, from_text)
    same_output(from_glob, from_text)
    assert {r.input for r in from_dir.rejected_sample} == {str(data)}


async def test_integer_column_is_read_as_digits(tmp_path: Path) -> None:
    phones = [37493828222 + i * 7919 for i in range(2000)] + [None, 12]
    pq.write_table(pa.table({"phone": pa.array(phones, pa.int64())}), tmp_path / "p.parquet")
    text = tmp_path / "p.txt"
    text.write_text("".join(f"{p if p is not None else ''}\n" for p in phones))
    same_output(
        await run([tmp_path / "p.parquet"], tmp_path / "a", id_type="phone"),
        await run([text], tmp_path / "b", id_type="phone"),
    )


async def test_parquet_and_text_inputs_mix_in_one_prepare(tmp_path: Path) -> None:
    first, second = export_values(3, 3000), export_values(4, 3000)
    pq.write_table(pa.table({"id": pa.array(first, pa.string())}), tmp_path / "a.parquet")
    mixed = await run([tmp_path / "a.parquet", as_text(second, tmp_path / "b.txt")], tmp_path / "m")
    both = await run([as_text(first + second, tmp_path / "ab.txt")], tmp_path / "t")
    assert [p.md5 for p in mixed.parts] == [p.md5 for p in both.parts]
    assert mixed.rows_read == both.rows_read and mixed.rejected == both.rejected


async def test_missing_column_names_the_columns_that_exist(tmp_path: Path) -> None:
    table = pa.table({"user_id": ["a"], "idfa": ["b"], "email": ["c"]})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"no column 'gaid' \(columns: 'user_id', 'idfa', 'email'"):
        await run([tmp_path / "t.parquet"], tmp_path / "o", column="gaid")
    with pytest.raises(InputError, match=r"has 3 columns; pick one with --column"):
        await run([tmp_path / "t.parquet"], tmp_path / "o")
    assert not (tmp_path / "o" / "manifest.json").exists()


async def test_column_by_index_and_by_case_insensitive_name(tmp_path: Path) -> None:
    values = export_values(5, 2000)
    table = pa.table({"n": pa.array(range(len(values))), "IDFA": pa.array(values, pa.string())})
    pq.write_table(table, tmp_path / "t.parquet")
    by_index = await run([tmp_path / "t.parquet"], tmp_path / "i", column=2)
    by_name = await run([tmp_path / "t.parquet"], tmp_path / "n", column="idfa")
    same_output(by_index, by_name)


async def test_a_column_of_another_type_is_refused_naming_it(tmp_path: Path) -> None:
    pq.write_table(pa.table({"score": [1.5, 2.5]}), tmp_path / "f.parquet")
    with pytest.raises(InputError, match=r"column 'score' holds double"):
        await run([tmp_path / "f.parquet"], tmp_path / "o")


async def test_a_file_named_parquet_that_is_not_parquet_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_text("5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25\n")
    with pytest.raises(InputError, match=r"x\.parquet: not a readable Parquet file"):
        await run([tmp_path / "x.parquet"], tmp_path / "o")


def test_column_lines_keep_one_line_per_value() -> None:
    arrays = (
        pa.array(["a", None, "b\nc", "", "d\r"], pa.string()),
        pa.array([b"e"], pa.binary()).dictionary_encode(),
    )
    job = ColumnJob(seq=0, input_index=0, name="t", first_row=0, arrays=arrays)
    assert column_lines(job) == b"a\n\n\x00\n\nd\r\ne\n"


def test_cli_missing_column_is_one_line_and_exit_2(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": ["x"], "b": ["y"]}), tmp_path / "t.parquet")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncsync",
            "prepare",
            str(tmp_path / "t.parquet"),
            "--column",
            "c",
            "-o",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "no column 'c' (columns: 'a', 'b')" in done.stderr


def test_cli_prepare_parquet_json_summary(tmp_path: Path) -> None:
    values = export_values(6, 1500)
    pq.write_table(pa.table({"id": pa.array(values, pa.string())}), tmp_path / "t.parquet")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncsync",
            "prepare",
            str(tmp_path / "t.parquet"),
            "-o",
            str(tmp_path / "o"),
            "--json",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(done.stdout)
    assert summary["rows_read"] == len(values)
    assert summary["rows_read"] == summary["rows_valid"] + summary["rows_invalid"]


def test_the_journal_sees_a_file_added_to_a_dataset(tmp_path: Path) -> None:
    from asyncsync.jobs.spec import describe_change, input_fingerprint

    data = tmp_path / "dataset"
    data.mkdir()
    pq.write_table(pa.table({"id": ["a"]}), data / "part-0.parquet")
    before, resumable = input_fingerprint([str(data)], {}, 500)
    again, _ = input_fingerprint([str(data)], {}, 500)
    pq.write_table(pa.table({"id": ["b"]}), data / "part-1.parquet")
    after, _ = input_fingerprint([str(data)], {}, 500)
    assert resumable and before == again and before != after
    assert describe_change(before, after) == f"{data} was modified"


def test_a_pipe_is_not_sniffed_for_parquet(tmp_path: Path) -> None:
    import os

    from asyncsync.pipeline.parquet import is_parquet

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert not is_parquet(str(fifo))  # would block (or eat bytes) if it were opened
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "no-suffix")
    assert is_parquet(str(tmp_path / "no-suffix"))
    assert is_parquet(str(tmp_path)) and is_parquet(str(tmp_path / "*.parquet"))
