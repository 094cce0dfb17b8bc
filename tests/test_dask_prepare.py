"""``asyncsync.dask.prepare`` on a real LocalCluster (2 worker processes, 1 thread each):
the same parts, bytes and counts as the local ``prepare``, caps held, and a worker killed at any
step neither loses nor doubles a digest."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import cloudpickle  # noqa: E402 - after the skips: it comes with the dask extra
from click.testing import CliRunner  # noqa: E402
from helpers.dask import KillOnce  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import asyncsync  # noqa: E402
import asyncsync.dask  # noqa: E402
from asyncsync.cli import main  # noqa: E402
from asyncsync.errors import InputError, NoValidIdsError, UsageError  # noqa: E402
from asyncsync.sample import write_sample  # noqa: E402

# The kill plugin below is defined here; workers get it by value, not by importing this file.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ZERO = b"00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One cluster for the module: 2 worker processes of 1 thread, restarted by their nannies."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: 8787 may be taken by another cluster
            memory_limit="1GiB",
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def maid(i: int, seed: int = 1) -> bytes:
    return str(uuid.UUID(int=(seed * 1_000_003 + i) * 2_654_435_761 % 2**128)).encode()


def local(*inputs: Path, out_dir: Path, **options: Any) -> asyncsync.PrepareResult:
    return asyncio.run(asyncsync.prepare(*inputs, out_dir=out_dir, workers=2, **options))


def comparable(result: asyncsync.PrepareResult) -> dict[str, object]:
    manifest = result.to_manifest()
    del manifest["elapsed_s"]
    return manifest


def assert_same_output(dask_result: asyncsync.PrepareResult, ref: asyncsync.PrepareResult) -> None:
    """Same manifest (parts with names, rows, bytes, MD5; every count; sample) and same bytes."""
    assert comparable(dask_result) == comparable(ref)
    for mine, theirs in zip(dask_result.parts, ref.parts, strict=True):
        data = mine.path.read_bytes()
        assert data == theirs.path.read_bytes()
        assert hashlib.md5(data).hexdigest() == mine.md5
    on_disk = json.loads((dask_result.out_dir / "manifest.json").read_text())
    assert on_disk == dask_result.to_manifest()


line_kinds = st.one_of(
    st.integers(0, 400).map(maid),  # small range: duplicates are common
    st.integers(0, 400).map(lambda i: maid(i).upper()),
    st.sampled_from([b"", b"  ", b"nope", ZERO, b" " + maid(1) + b" ", maid(2) + b"\r", b"\xff"]),
)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    files=st.lists(st.lists(line_kinds, max_size=300), min_size=1, max_size=3),
    bom=st.booleans(),
    trailing_newline=st.booleans(),
    ranges=st.integers(1, 5),
    rows_per_part=st.integers(1, 200),
)
def test_random_inputs_give_the_local_parts_byte_for_byte(
    client: Any,
    tmp_path_factory: pytest.TempPathFactory,
    files: list[list[bytes]],
    bom: bool,
    trailing_newline: bool,
    ranges: int,
    rows_per_part: int,
) -> None:
    tmp = tmp_path_factory.mktemp("random")
    paths = []
    for i, lines in enumerate(files):
        data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
        path = tmp / f"in-{i}.txt"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
        paths.append(path)
    cap = rows_per_part * 65
    try:
        ref = local(*paths, out_dir=tmp / "local", max_file_bytes=cap)
    except NoValidIdsError:
        with pytest.raises(NoValidIdsError):
            asyncsync.dask.prepare(paths, out_dir=tmp / "dask", client=client, max_file_bytes=cap)
        return
    got = asyncsync.dask.prepare(
        [str(p) for p in paths],
        out_dir=tmp / "dask",
        client=client,
        max_file_bytes=cap,
        ranges=ranges,
        chunk_bytes=4096,  # several hashing tasks per file
    )
    assert_same_output(got, ref)


def test_md5_of_emails_matches_local_and_every_part_respects_the_cap(
    client: Any, tmp_path: Path
) -> None:
    lines = [f"User{i % 700}+tag@Example.com".encode() for i in range(2000)]
    lines += [b"not-an-email", b"", b"user@.com"]
    src = tmp_path / "emails.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    cap = 5000
    ref = local(src, out_dir=tmp_path / "local", id_type="email", max_file_bytes=cap)
    got = asyncsync.dask.prepare(
        src, out_dir=tmp_path / "dask", client=client, id_type="email", max_file_bytes=cap
    )
    assert_same_output(got, ref)
    assert got.rows_written == 700 and got.duplicates == 1300
    assert all(p.bytes == p.path.stat().st_size <= cap for p in got.parts)
    assert [p.rows for p in got.parts] == [cap // 65] * (700 // (cap // 65)) + [700 % (cap // 65)]


def test_gzip_input_matches_local(client: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.txt.gz"
    src.write_bytes(gzip.compress(b"\n".join(maid(i % 900) for i in range(3000)) + b"\n"))
    ref = local(src, out_dir=tmp_path / "local", max_file_bytes=20_000)
    got = asyncsync.dask.prepare(
        src, out_dir=tmp_path / "dask", client=client, max_file_bytes=20_000
    )
    assert_same_output(got, ref)


@pytest.mark.parametrize("country", [None, "GB"])
def test_national_phones_follow_default_country_as_locally(
    client: Any, tmp_path: Path, country: str | None
) -> None:
    lines = [b"07700 900%03d" % (i % 300) for i in range(900)]  # national (GB) numbers
    lines += [b"+44 7700 900%03d" % i for i in range(50)] + [b"447700900999", b"00447700900998"]
    src = tmp_path / "phones.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    ref = local(src, out_dir=tmp_path / "local", id_type="phone", default_country=country)
    got = asyncsync.dask.prepare(
        src, out_dir=tmp_path / "dask", client=client, id_type="phone", default_country=country
    )
    assert_same_output(got, ref)
    if country is None:
        assert got.national_phones == got.rejected["malformed"] == 900
        assert got.rows_written == 52
    else:
        assert got.national_phones == 0 and got.rows_written == 300 + 2  # 900xxx overlap +44


def test_a_glob_of_files_numbers_rejected_lines_per_file(client: Any, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"in-{i}.txt"
        path.write_bytes(b"\n".join([maid(j + 100 * i) for j in range(400)] + [b"bad\n"]))
        paths.append(path)
    ref = local(*paths, out_dir=tmp_path / "local", max_file_bytes=10_000)
    got = asyncsync.dask.prepare(
        str(tmp_path / "in-*.txt"),
        out_dir=tmp_path / "dask",
        client=client,
        max_file_bytes=10_000,
        chunk_bytes=4096,
    )
    want, mine = comparable(ref), comparable(got)
    assert mine.pop("inputs") == [str(tmp_path / "in-*.txt")]
    want.pop("inputs")
    assert mine == want
    assert [(r.input, r.line) for r in got.rejected_sample] == [(str(p), 401) for p in paths]


def _values_and_text(n: int) -> tuple[list[str | None], bytes]:
    values: list[str | None] = [maid(i % 500).decode() for i in range(n)]
    values[7] = None  # a null is an empty row
    values[8] = "garbage"
    text = b"\n".join(b"" if v is None else v.encode() for v in values) + b"\n"
    return values, text


def test_parquet_dataset_gives_the_parts_of_the_same_ids_as_text(
    client: Any, tmp_path: Path
) -> None:
    values, text = _values_and_text(3000)
    dataset = tmp_path / "lake"
    dataset.mkdir()
    for i in range(3):  # a dataset of 3 files, several row groups each
        chunk = values[i * 1000 : (i + 1) * 1000]
        table = pa.table({"maid": pa.array(chunk, pa.string()), "n": list(range(len(chunk)))})
        pq.write_table(table, dataset / f"part-{i}.parquet", row_group_size=300)
    src = tmp_path / "same.txt"
    src.write_bytes(text)
    ref = local(src, out_dir=tmp_path / "local", max_file_bytes=10_000)
    got = asyncsync.dask.prepare(
        str(dataset),
        out_dir=tmp_path / "dask",
        client=client,
        column="maid",
        max_file_bytes=10_000,
    )
    want = comparable(ref)
    mine = comparable(got)
    for key in ("inputs", "rejected_sample"):
        want.pop(key)
        mine.pop(key)
    want["options"]["column"] = "maid"  # type: ignore[index]
    assert mine == want
    assert [s.line for s in got.rejected_sample] == [8, 9]  # 1-based rows of the dataset


def test_dask_dataframe_column_and_series_are_accepted(client: Any, tmp_path: Path) -> None:
    import pandas as pd

    values, text = _values_and_text(2000)
    frame = dd.from_pandas(pd.DataFrame({"id": values, "x": range(2000)}), npartitions=4)
    src = tmp_path / "same.txt"
    src.write_bytes(text)
    ref = local(src, out_dir=tmp_path / "local")
    by_column = asyncsync.dask.prepare(frame, column="id", out_dir=tmp_path / "a", client=client)
    series = asyncsync.dask.prepare(frame["id"], out_dir=tmp_path / "b", client=client)
    for got in (by_column, series):
        assert [p.md5 for p in got.parts] == [p.md5 for p in ref.parts]
        assert (got.rows_read, got.rejected, got.duplicates, got.rows_written) == (
            ref.rows_read,
            ref.rejected,
            ref.duplicates,
            ref.rows_written,
        )
    with pytest.raises(UsageError, match="column= is required"):
        asyncsync.dask.prepare(frame, out_dir=tmp_path / "c", client=client)


def test_csv_column_matches_local(client: Any, tmp_path: Path) -> None:
    rows = [f"{maid(i % 300).decode()},{i}" for i in range(1000)] + ["bad,1", ",2"]
    src = tmp_path / "in.csv"
    src.write_text("maid,n\n" + "\n".join(rows) + "\n")
    ref = local(src, out_dir=tmp_path / "local", column="maid")
    got = asyncsync.dask.prepare(src, out_dir=tmp_path / "dask", client=client, column="maid")
    assert_same_output(got, ref)


def test_no_valid_id_and_missing_input_are_clear_errors(client: Any, tmp_path: Path) -> None:
    src = tmp_path / "bad.txt"
    src.write_bytes(b"nope\n\n" + ZERO + b"\n")
    with pytest.raises(NoValidIdsError, match=r"no valid ID in 3 lines"):
        asyncsync.dask.prepare(src, out_dir=tmp_path / "out", client=client)
    assert not (tmp_path / "out" / "manifest.json").exists()
    with pytest.raises(InputError, match="no such file"):
        asyncsync.dask.prepare(tmp_path / "missing.txt", out_dir=tmp_path / "out", client=client)


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("sample")
    paths = []
    for i in range(3):
        path = tmp / f"in-{i}.txt"
        write_sample(path, 15_000, seed=i)  # duplicates across files: the same seed space
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def sample_reference(
    sample_inputs: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> asyncsync.PrepareResult:
    return local(*sample_inputs, out_dir=tmp_path_factory.mktemp("ref"), max_file_bytes=500_000)


@pytest.mark.parametrize(
    "step",
    [
        "shuffle-transfer",  # P2P shuffle: Dask restarts the shuffle without the lost worker
        pytest.param("hash_text_piece", marks=pytest.mark.slow),
        pytest.param("write_run", marks=pytest.mark.slow),  # a range's dedupe, retried
        pytest.param("write_part", marks=pytest.mark.slow),  # a part, rewritten whole
    ],
)
def test_worker_killed_mid_run_loses_and_doubles_no_digest(
    client: Any,
    tmp_path: Path,
    sample_inputs: list[Path],
    sample_reference: asyncsync.PrepareResult,
    step: str,
) -> None:
    marker = tmp_path / "killed"
    pids_before = set(client.run(os.getpid).values())
    name = f"kill-{step}"
    client.register_plugin(KillOnce(step, str(marker)), name=name)
    try:
        got = asyncsync.dask.prepare(
            sample_inputs,
            out_dir=tmp_path / "dask",
            client=client,
            max_file_bytes=500_000,
            chunk_bytes=1 << 20,
            ranges=4,
        )
    finally:
        client.unregister_worker_plugin(name)
    killed = int(marker.read_text())
    assert killed in pids_before  # a worker really died while running that step
    assert_same_output(got, sample_reference)
    client.wait_for_workers(2, timeout=60)


def test_cli_prepare_dask_writes_the_local_manifest(
    client: Any, tmp_path: Path, sample_inputs: list[Path], sample_reference: Any
) -> None:
    address = client.scheduler.address
    out = tmp_path / "out"
    args = [
        "prepare",
        *map(str, sample_inputs),
        "-o",
        str(out),
        "--max-file-bytes",
        "500000",
        "--dask",
        address,
    ]
    done = CliRunner().invoke(main, [*args, "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    want = sample_reference.to_manifest()
    for key in (
        "parts",
        "rows_read",
        "rows_valid",
        "rows_invalid",
        "rejected",
        "duplicates",
        "rows_written",
        "calculate_type",
    ):
        assert summary[key] == want[key]
    assert json.loads((out / "manifest.json").read_text())["parts"] == want["parts"]
    bad = CliRunner().invoke(main, [*args, "--workers", "2"])
    assert bad.exit_code == 2 and "--workers" in bad.output


@pytest.mark.slow
def test_two_million_rows_over_four_files_match_local(client: Any, tmp_path: Path) -> None:
    paths = []
    for i in range(4):
        path = tmp_path / f"in-{i}.txt"
        write_sample(path, 500_000, seed=10 + i)
        paths.append(path)
    ref = local(*paths, out_dir=tmp_path / "local", max_file_bytes=10_000_000)
    got = asyncsync.dask.prepare(
        paths,
        out_dir=tmp_path / "dask",
        client=client,
        max_file_bytes=10_000_000,
        chunk_bytes=8 << 20,
    )
    assert got.rows_read == 2_000_000
    assert_same_output(got, ref)


@pytest.mark.slow
def test_spark_map_in_arrow_recipe_gives_the_digests_of_the_local_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Needs pyspark and a Java runtime (not in the project's extras: CI skips it)."""
    sql = pytest.importorskip("pyspark.sql")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    values = [maid(i % 300).decode() for i in range(1000)] + [None, "bad", ZERO.decode()]
    src = tmp_path / "same.txt"
    src.write_bytes(b"\n".join(b"" if v is None else v.encode() for v in values) + b"\n")
    ref = local(src, out_dir=tmp_path / "local")

    # The README's Spark recipe: the chunk hasher called from PySpark's mapInArrow.
    def hash_batches(batches: Any) -> Any:  # runs on the executors; each batch holds one column
        import binascii

        import numpy as np

        from asyncsync.rules.hashing import hash_values

        for batch in batches:
            values = batch.column(0).cast(pa.large_binary()).fill_null(b"").to_pylist()
            hashed = hash_values(values, id_type="maid", hash_algo="sha256")
            hexed = pa.array(np.frombuffer(binascii.hexlify(hashed.digests), dtype="S64"))
            yield pa.record_batch([hexed.cast(pa.string())], names=["digest"])

    spark = (
        sql.SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        ids = spark.createDataFrame([(v,) for v in values], "maid string")
        digests = ids.mapInArrow(hash_batches, "digest string").distinct().collect()
    finally:
        spark.stop()
    want = [line for p in ref.parts for line in p.path.read_text().splitlines()]
    assert sorted(r.digest for r in digests) == want
