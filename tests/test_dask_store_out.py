"""``asyncsync.dask.prepare`` into object storage: an S3-compatible server (moto) on a loopback
port and a LocalCluster (2 worker processes, 1 thread each) whose workers find the store through
the standard AWS variables. The parts and manifest in the store are the local ``prepare``'s,
``sync --prepared s3://...`` delivers exactly their digests, and a worker killed while writing
parts leaves neither a partial part, nor a duplicate, nor a temporary object."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")
pytest.importorskip("s3fs")

import cloudpickle  # noqa: E402 - after the skips: it comes with the dask extra
from click.testing import CliRunner  # noqa: E402
from helpers.api import ADVERTISER  # noqa: E402
from helpers.dask import KillOnce  # noqa: E402
from helpers.s3 import BUCKET, S3Server, credentials, free_port  # noqa: E402
from helpers.sandbox import client_for, sync_options  # noqa: E402

import asyncsync  # noqa: E402
import asyncsync.dask  # noqa: E402
from asyncsync import sync_audience  # noqa: E402
from asyncsync.cli import main  # noqa: E402
from asyncsync.errors import UsageError  # noqa: E402
from asyncsync.sample import write_sample  # noqa: E402
from asyncsync.sandbox import Sandbox  # noqa: E402

# The kill plugin below is defined here; workers get it by value, not by importing this file.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CAP = 200_000  # bytes per part: several parts


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """The store, and the AWS variables set for the whole module (the workers, spawned after,
    inherit them: nothing about the store travels in a task)."""
    server = S3Server(free_port())
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        credentials(mp, server)
        yield server
    server.kill()


@pytest.fixture(scope="module")
def client(s3: S3Server) -> Iterator[Any]:
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


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("inputs")
    paths = []
    for i in range(2):
        path = tmp / f"in-{i}.txt"
        write_sample(path, 6_000, seed=i)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def reference(
    inputs: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> asyncsync.PrepareResult:
    out = tmp_path_factory.mktemp("ref")
    return asyncio.run(asyncsync.prepare(*inputs, out_dir=out, workers=1, max_file_bytes=CAP))


def keys(s3: S3Server, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (hidden ones included), by name below it."""
    api = s3.client()
    out = {}
    for page in api.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            body = api.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            out[item["Key"][len(prefix) :]] = body
    return out


def without_elapsed(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "elapsed_s"}


def assert_store_holds(
    s3: S3Server, prefix: str, got: asyncsync.PrepareResult, ref: asyncsync.PrepareResult
) -> None:
    """The prefix holds exactly the reference's parts (same bytes) and its manifest."""
    objects = keys(s3, prefix)
    assert sorted(objects) == sorted([p.file for p in ref.parts] + ["manifest.json"])
    for part in ref.parts:
        assert objects[part.file] == part.path.read_bytes()
    assert b"testing" not in objects["manifest.json"]  # the store's credentials stay out
    written = json.loads(objects["manifest.json"])
    assert without_elapsed(written) == without_elapsed(ref.to_manifest())
    assert written == got.to_manifest()


def seed_left_overs(s3: S3Server, prefix: str) -> None:
    """What an earlier, interrupted run could have left under the prefix."""
    s3.put(f"{prefix}manifest.json", b"{}")
    s3.put(f"{prefix}part-00099.txt", b"stale\n")
    s3.put(f"{prefix}part-00001.txt.tmp-0123abcd", b"partial")
    s3.put(f"{prefix}.prepare-spill-dask-old/run-000000.bin", b"\0" * 32)


@pytest.fixture(scope="module")
def in_store(
    s3: S3Server, client: Any, inputs: list[Path], reference: asyncsync.PrepareResult
) -> asyncsync.PrepareResult:
    seed_left_overs(s3, "out/")
    return asyncsync.dask.prepare(
        [str(p) for p in inputs],
        out_dir=f"s3://{BUCKET}/out/",
        client=client,
        max_file_bytes=CAP,
        ranges=3,
    )


def test_parts_and_manifest_in_s3_are_the_local_ones(
    s3: S3Server, in_store: asyncsync.PrepareResult, reference: asyncsync.PrepareResult
) -> None:
    assert len(reference.parts) > 1
    assert_store_holds(s3, "out/", in_store, reference)


async def test_sync_prepared_from_s3_delivers_exactly_those_digests(
    s3: S3Server,
    in_store: asyncsync.PrepareResult,
    reference: asyncsync.PrepareResult,
    sandbox: Sandbox,
    tmp_path: Path,
) -> None:
    opts = sync_options(tmp_path, sandbox)
    del opts["workers"], opts["max_file_bytes"]
    async with client_for(sandbox) as api:
        result = await sync_audience(api, prepared=f"s3://{BUCKET}/out/", name="d", **opts)
        assert result.rows_written == reference.rows_written
        assert result.parts == len(reference.parts)
        for _ in range(500):
            (audience,) = await api.get_audiences(ADVERTISER, [str(result.audience_id)])
            if audience.is_valid:
                break
            await asyncio.sleep(0.01)
    expected: set[str] = set()
    for part in reference.parts:
        expected |= set(part.path.read_text().split())
    assert set(sandbox.members(str(result.audience_id))) == expected


def test_worker_killed_while_writing_parts_gives_the_exact_output(
    s3: S3Server,
    client: Any,
    inputs: list[Path],
    reference: asyncsync.PrepareResult,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "killed"
    pids_before = set(client.run(os.getpid).values())
    seed_left_overs(s3, "killed/")
    client.register_plugin(KillOnce("write_part_to_store", str(marker)), name="kill-part")
    try:
        got = asyncsync.dask.prepare(
            inputs, out_dir=f"s3://{BUCKET}/killed", client=client, max_file_bytes=CAP, ranges=3
        )
    finally:
        client.unregister_worker_plugin("kill-part")
    assert int(marker.read_text()) in pids_before  # a worker died writing a part
    assert_store_holds(s3, "killed/", got, reference)
    client.wait_for_workers(2, timeout=60)


def test_cli_prepare_dask_into_s3(
    s3: S3Server, client: Any, inputs: list[Path], reference: asyncsync.PrepareResult
) -> None:
    url = f"s3://{BUCKET}/cli/"
    args = [
        "prepare",
        *map(str, inputs),
        "-o",
        url,
        "--max-file-bytes",
        str(CAP),
        "--dask",
        client.scheduler.address,
        "--json",
    ]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["out_dir"] == url.rstrip("/")
    assert summary["manifest"] == f"{url}manifest.json"
    assert summary["parts"] == reference.to_manifest()["parts"]
    assert "testing" not in done.output  # no credential in what is shown
    assert_store_holds(s3, "cli/", _read(s3, "cli/"), reference)


def _read(s3: S3Server, prefix: str) -> Any:
    """The manifest in the store, as a result whose ``to_manifest`` it is."""

    class Written:
        def __init__(self, manifest: dict[str, Any]) -> None:
            self.manifest = manifest

        def to_manifest(self) -> dict[str, Any]:
            return self.manifest

    return Written(json.loads(keys(s3, prefix)["manifest.json"]))


def test_credentials_in_the_out_dir_url_are_refused(client: Any) -> None:
    with pytest.raises(UsageError, match="user info or a query"):
        asyncsync.dask.prepare(
            ["unused.txt"], out_dir="s3://key:secret@exports/x?token=abc", client=client
        )
