"""Odd inputs a nightly job meets: decompression bombs, endless lines, pipes given as file names,
a few NUL bytes in a text export, options that imply or contradict each other.

Real files in ``tmp_path``; the CLI through click's runner or as a subprocess (pipes, FIFOs and
process substitution need a real process); the library through its public functions.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import tracemalloc
import uuid
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from asyncsync.cli import main
from asyncsync.errors import InputError, UsageError
from asyncsync.jobs.spec import input_fingerprint
from asyncsync.pipeline import PrepareOptions, prepare
from asyncsync.pipeline.source import (
    MAX_RECORD_BYTES,
    InputSpec,
    LineTooLongError,
    is_stream,
    iter_jobs,
    open_inputs,
)
from asyncsync.rules.limits import HashAlgo, IdType

MiB = 1024 * 1024
MAID = "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25"


def maids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i * 104_729 + 17)) for i in range(n)]


def digests(ids: list[str]) -> set[str]:
    return {hashlib.sha256(i.lower().encode()).hexdigest() for i in ids}


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def run_prepare(*inputs: str | Path, out: Path, **options: object) -> object:
    return asyncio.run(prepare(*inputs, out_dir=out, workers=2, **options))


def parts_of(out: Path) -> set[str]:
    found: set[str] = set()
    for part in sorted(out.glob("part-*.txt")):
        found.update(part.read_text().split())
    return found


def subprocess_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ASYNCSYNC_")}


# -- memory bounded by the chunk size ---------------------------------------------------------


def write_zstd_bomb(path: Path, head: bytes, filler: bytes, total: int) -> None:
    """``head`` then ``filler`` repeated up to ``total`` bytes, zstd compressed as it goes."""
    block = filler * (MiB // len(filler))
    with path.open("wb") as f, zstandard.ZstdCompressor(level=3).stream_writer(f) as z:
        z.write(head)
        written = len(head)
        while written < total:
            z.write(block)
            written += len(block)


def drain_jobs(specs: list[InputSpec]) -> int:
    async def run() -> int:
        n = 0
        async for _ in iter_jobs(specs, 4 * MiB):
            n += 1
        return n

    return asyncio.run(run())


def test_a_zstd_bomb_is_refused_at_the_line_limit_without_inflating_in_memory(
    tmp_path: Path,
) -> None:
    bomb = tmp_path / "bomb.txt.zst"
    write_zstd_bomb(bomb, (MAID + "\n").encode(), b"x", 1024 * MiB)
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as info:
            drain_jobs(open_inputs([str(bomb)], None, IdType.AUTO))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The reader names the line by its place: the first line of the input's second chunk
    # (the first chunk held line 1). prepare numbers it from the line ends the workers
    # counted in the chunks before it (test_a_line_past_the_limit_is_refused_...).
    error = info.value
    assert isinstance(error, LineTooLongError)
    assert str(error).startswith(f"{bomb}: a line longer than")
    assert (error.line, error.input_index, error.seq, error.chunk_line) == (None, 0, 1, 1)
    # The line limit and a few chunks (about 90 MiB), not the gigabyte the frame expands to.
    assert peak < 2 * MAX_RECORD_BYTES, f"peak {peak / MiB:.0f} MiB"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_streamed_line_past_the_limit_is_numbered_across_chunks_and_inputs(
    tmp_path: Path, compression: str
) -> None:
    # A compressed input is streamed through the command, which no longer counts its lines:
    # the line is numbered from the line ends the workers counted in the chunks before it, of
    # this input only (the first input's 2,000 lines do not count), over many small chunks.
    def packed(data: bytes) -> bytes:
        if compression == "gzip":
            return gzip.compress(data, compresslevel=1)
        return zstandard.ZstdCompressor(level=1).compress(data)

    first = tmp_path / f"first.txt.{compression}"
    first.write_bytes(packed("".join(f"{m}\n" for m in maids(2_000)).encode()))
    data = (
        "".join(f"{m}\n" for m in maids(3_000)).encode()
        + b"7" * (MAX_RECORD_BYTES + 1)
        + b"\n"
        + (MAID + "\n").encode()
    )
    second = tmp_path / f"second.txt.{compression}"
    second.write_bytes(packed(data))
    with pytest.raises(InputError) as info:
        run_prepare(first, second, out=tmp_path / "out", chunk_bytes=16 * 1024)
    assert str(info.value).startswith(f"{second}: line 3001: ")
    assert info.value.line == 3001


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_line_past_the_limit_is_refused_with_its_line_number(
    tmp_path: Path, compression: str
) -> None:
    data = (
        "".join(f"{m}\n" for m in maids(3)).encode()
        + b"7" * (MAX_RECORD_BYTES + 1)
        + b"\n"
        + (MAID + "\n").encode()
    )
    src = tmp_path / ("long.txt" if compression == "none" else "long.txt.gz")
    src.write_bytes(data if compression == "none" else gzip.compress(data, compresslevel=1))
    with pytest.raises(InputError) as info:
        run_prepare(src, out=tmp_path / "out")
    assert str(info.value).startswith(f"{src}: line 4: ")
    assert "longer than" in str(info.value)
    assert info.value.line == 4
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_line_just_under_the_limit_in_a_plain_file_is_one_malformed_row(tmp_path: Path) -> None:
    src = tmp_path / "long.txt"
    src.write_bytes(b"7" * (MAX_RECORD_BYTES - 10) + b"\n" + (MAID + "\n").encode())
    result = run_prepare(src, out=tmp_path / "out")
    assert (result.rows_read, result.rejected["malformed"], result.rows_written) == (  # type: ignore[attr-defined]
        2,
        1,
        1,
    )


# -- pipes given as file names ----------------------------------------------------------------


def test_is_stream_says_which_names_are_read_as_a_stream(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    regular = tmp_path / "ids.txt"
    regular.write_text(MAID + "\n")
    assert is_stream("-")
    assert is_stream(str(fifo))
    assert is_stream("/dev/null")
    assert not is_stream(str(regular))
    assert not is_stream(str(tmp_path))
    assert not is_stream(str(tmp_path / "missing"))


def feed_fifo(fifo: Path, data: bytes) -> threading.Thread:
    def write() -> None:
        with fifo.open("wb") as f:
            f.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def prepare_process(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "asyncsync", "prepare", *args, "--json", "--workers", "2"],
        input=stdin,
        capture_output=True,
        env=subprocess_env(),
        timeout=120,
    )


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_a_named_fifo_is_read_as_a_stream(tmp_path: Path, compression: str) -> None:
    ids = maids(5000)
    data = "".join(f"{i}\n" for i in ids).encode()
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    writer = feed_fifo(fifo, data)
    done = prepare_process(str(fifo), "-o", str(tmp_path / "out"))
    writer.join(10)
    assert done.returncode == 0, done.stderr.decode()
    summary = json.loads(done.stdout)
    assert (summary["rows_read"], summary["rows_written"]) == (5000, 5000)
    assert parts_of(tmp_path / "out") == digests(ids)


def test_a_csv_column_is_taken_from_a_named_fifo(tmp_path: Path) -> None:
    ids = maids(300)
    data = ("name,idfa\n" + "".join(f"n{k},{i}\n" for k, i in enumerate(ids))).encode()
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    writer = feed_fifo(fifo, data)
    done = prepare_process(str(fifo), "-o", str(tmp_path / "out"), "--column", "idfa")
    writer.join(10)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["rows_read"] == 300
    assert parts_of(tmp_path / "out") == digests(ids)


def test_dev_stdin_is_read_as_a_stream(tmp_path: Path) -> None:
    ids = maids(2000)
    done = prepare_process(
        "/dev/stdin", "-o", str(tmp_path / "out"), stdin="".join(f"{i}\n" for i in ids).encode()
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["rows_written"] == 2000
    assert parts_of(tmp_path / "out") == digests(ids)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_process_substitution_is_read_as_a_stream(tmp_path: Path) -> None:
    ids = maids(2000)
    src = tmp_path / "ids.txt"
    src.write_text("".join(f"{i}\n" for i in ids))
    script = (
        f'exec "{sys.executable}" -m asyncsync prepare <(cat "{src}") '
        f'-o "{tmp_path / "out"}" --json --workers 2'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, env=subprocess_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["rows_written"] == 2000
    assert parts_of(tmp_path / "out") == digests(ids)


def test_a_job_reading_a_fifo_is_journaled_but_not_resumable(tmp_path: Path) -> None:
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    regular = tmp_path / "ids.txt"
    regular.write_text(MAID + "\n")
    fingerprint, resumable = input_fingerprint([str(fifo)], {}, 500)
    assert not resumable
    assert fingerprint["inputs"] == [{"path": str(fifo)}]  # not read for a digest
    local, resumable = input_fingerprint([str(regular)], {}, 500)
    assert resumable and "xxh3" in local["inputs"][0]
    mixed, resumable = input_fingerprint([str(regular), str(fifo)], {}, 500)
    assert not resumable and mixed["inputs"] == [local["inputs"][0], {"path": str(fifo)}]


# -- NUL bytes ----------------------------------------------------------------------------------


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(data)
    return data


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_a_few_nul_bytes_at_the_start_are_malformed_lines_with_a_sample(
    tmp_path: Path, compression: str
) -> None:
    ids = maids(4)
    data = b"%s\n\x00\x00\x00\n%s\n%s\x00\n%s\n" % tuple(i.encode() for i in ids)
    src = tmp_path / "damaged.txt"
    src.write_bytes(compress(data, compression))
    result = run_prepare(src, out=tmp_path / "out")
    assert result.rows_read == 5  # type: ignore[attr-defined]
    assert result.rejected["malformed"] == 2  # type: ignore[attr-defined]
    sample = [(r.line, r.reason) for r in result.rejected_sample]  # type: ignore[attr-defined]
    assert sample == [(2, "malformed"), (4, "malformed")]
    assert parts_of(tmp_path / "out") == digests([ids[0], ids[1], ids[3]])


def test_nul_bytes_on_stdin_are_malformed_lines_too(tmp_path: Path) -> None:
    data = f"{MAID}\n\x00\n".encode()
    result = CliRunner().invoke(
        main, ["prepare", "-", "-o", str(tmp_path / "out"), "--json"], input=data
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rejected"]["malformed"] == 1
    assert summary["rejected_sample"] == [{"input": "-", "line": 2, "reason": "malformed"}]


@pytest.mark.parametrize(
    ("head", "named"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00", "zip"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"SQLite format 3\x00", "SQLite"),
        (b"\xff\xfe5\x00f\x003\x00", "UTF-16"),
    ],
)
def test_a_known_binary_format_is_refused_by_name(tmp_path: Path, head: bytes, named: str) -> None:
    src = tmp_path / "export.txt"
    src.write_bytes(head + f"{MAID}\n".encode() * 100)
    code, _, err = cli("prepare", str(src), "-o", str(tmp_path / "out"))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"asyncsync: error: {src}: not a text file")
    assert named in line


def test_a_file_that_starts_like_parquet_is_read_as_parquet_and_a_broken_one_named(
    tmp_path: Path,
) -> None:
    src = tmp_path / "export.txt"
    src.write_bytes(b"PAR1\x15\x04\x15\x80" + f"{MAID}\n".encode() * 100)
    code, _, err = cli("prepare", str(src), "-o", str(tmp_path / "out"))
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"asyncsync: error: {src}: not a readable Parquet file")


def test_parquet_on_a_stream_is_refused_by_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["prepare", "-", "-o", str(tmp_path / "out")],
        input=b"PAR1\x15\x04\x15\x80" + f"{MAID}\n".encode() * 100,
    )
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "not a text file" in line and "Parquet" in line


def test_a_head_that_is_mostly_not_text_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "noise.txt"
    noise = hashlib.shake_256(b"seed").digest(64 * 1024)
    src.write_bytes(f"{MAID}\n".encode() + noise)
    with pytest.raises(InputError, match="not a text file"):
        run_prepare(src, out=tmp_path / "out")


# -- options that imply or contradict each other ------------------------------------------------


def test_already_hashed_input_implies_its_hash(tmp_path: Path) -> None:
    md5s = [hashlib.md5(m.encode()).hexdigest() for m in maids(20)]
    src = tmp_path / "md5.txt"
    src.write_text("\n".join(md5s) + "\n")
    code, out, err = cli("prepare", str(src), "-o", str(tmp_path / "out"), "--id-type", "md5",
                         "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["calculate_type"] == "FIRST_MD5"
    assert parts_of(tmp_path / "out") == set(md5s)
    assert PrepareOptions(id_type=IdType.MD5).hash_algo is HashAlgo.MD5
    assert PrepareOptions(id_type=IdType.SHA256).hash_algo is HashAlgo.SHA256
    assert PrepareOptions(id_type=IdType.MD5, hash_algo=HashAlgo.MD5).hash_algo is HashAlgo.MD5
    assert PrepareOptions().hash_algo is HashAlgo.SHA256


@pytest.mark.parametrize(("id_type", "hash_algo"), [("md5", "sha256"), ("sha256", "md5")])
def test_a_hash_that_contradicts_the_id_type_names_both_options(
    tmp_path: Path, id_type: str, hash_algo: str
) -> None:
    src = tmp_path / "ids.txt"
    src.write_text("0" * 32 + "\n")
    code, _, err = cli("prepare", str(src), "-o", str(tmp_path / "out"), "--id-type", id_type,
                       "--hash", hash_algo)  # fmt: skip
    assert code == 2
    [line] = err.strip().splitlines()
    assert f"--id-type {id_type}" in line and f"--hash {hash_algo}" in line, line
    with pytest.raises(UsageError) as info:
        PrepareOptions(id_type=id_type, hash_algo=hash_algo)  # type: ignore[arg-type]
    assert f"--id-type {id_type}" in str(info.value) and f"--hash {hash_algo}" in str(info.value)


@pytest.mark.parametrize("column", ["-1", "0", "-3"])
def test_a_column_index_below_one_says_indexes_are_1_based(tmp_path: Path, column: str) -> None:
    src = tmp_path / "ids.csv"
    src.write_text(f"idfa\n{MAID}\n")
    code, _, err = cli("prepare", str(src), "-o", str(tmp_path / "out"), "--column", column)
    assert code == 2
    [line] = err.strip().splitlines()
    assert f"--column {column}" in line and "1-based" in line, line
    with pytest.raises(UsageError, match="1-based"):
        PrepareOptions(column=int(column))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_command_started_with_stdin_closed_runs(tmp_path: Path) -> None:
    """As a scheduler may start it (``cmd <&-``): a closed descriptor 0 must not be taken by
    the next file or socket opened, which the event loop then refuses to close."""
    src = tmp_path / "ids.txt"
    src.write_text(MAID + "\n")
    script = f'exec "{sys.executable}" -m asyncsync prepare "{src}" -o "{tmp_path / "out"}" <&-'
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, env=subprocess_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    assert parts_of(tmp_path / "out") == digests([MAID])
