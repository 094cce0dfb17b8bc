"""Inputs in object storage: an S3-compatible server (moto in server mode) on a loopback port,
started by these tests as a separate process so that it can be killed mid-read."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.api import ADVERTISER
from helpers.ids import DIGEST_LINE
from helpers.proxy import CuttableProxy
from helpers.s3 import BUCKET, S3Server, credentials, free_port
from helpers.sandbox import client_for, sync_options

from asyncsync import sync_audience
from asyncsync.errors import InputChangedError, InputError, NameTakenError, Paused
from asyncsync.events import ChunkHashed, Event
from asyncsync.pipeline import PrepareResult, prepare
from asyncsync.remote import RemoteObject, RemoteStream, forget_look_ahead, look_ahead
from asyncsync.sandbox import Sandbox


@pytest.fixture(scope="module")
def s3_module() -> Iterator[S3Server]:
    server = S3Server(free_port())
    server.start()
    yield server
    server.kill()


@pytest.fixture
def s3(s3_module: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The shared server, with the standard AWS variables pointing at it."""
    credentials(monkeypatch, s3_module)
    return s3_module


def maid_lines(seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        h = f"{rng.getrandbits(128):032x}"
        value = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        r = rng.random()
        lines.append(value.upper() if r < 0.3 else ("" if r < 0.32 else value))
    lines += [*lines[: n // 10], "not-an-id"]
    return ("\n".join(lines) + "\n").encode()


async def run(inputs: list[Path | str], out: Path, **options: Any) -> PrepareResult:
    options.setdefault("workers", 1)
    options.setdefault("chunk_bytes", 64 * 1024)
    return await prepare(*inputs, out_dir=out, **options)


def same_output(a: PrepareResult, b: PrepareResult) -> None:
    assert [(p.bytes, p.rows, p.md5) for p in a.parts] == [
        (p.bytes, p.rows, p.md5) for p in b.parts
    ]
    for key in ("rows_read", "rows_valid", "rows_invalid", "rejected", "duplicates"):
        assert getattr(a, key) == getattr(b, key), key
    assert [(r.line, r.reason) for r in a.rejected_sample] == [
        (r.line, r.reason) for r in b.rejected_sample
    ]


# -- reading -------------------------------------------------------------------------------


async def test_s3_text_gives_what_the_local_file_gives(s3: S3Server, tmp_path: Path) -> None:
    data = maid_lines(1, 20_000)
    (tmp_path / "local.txt").write_bytes(data)
    url = s3.put("plain/export.txt", data)
    same_output(
        await run([url], tmp_path / "a"), await run([tmp_path / "local.txt"], tmp_path / "b")
    )


async def test_s3_gzip_and_csv_column_are_read_as_locally(s3: S3Server, tmp_path: Path) -> None:
    rows = maid_lines(2, 8000).decode().splitlines()
    csv = ("user,idfa\n" + "".join(f"u{i},{r}\n" for i, r in enumerate(rows))).encode()
    packed = gzip.compress(csv)
    (tmp_path / "local.csv.gz").write_bytes(packed)
    url = s3.put("csv/export.csv.gz", packed)
    remote = await run([url], tmp_path / "a", column="idfa")
    local = await run([tmp_path / "local.csv.gz"], tmp_path / "b", column="idfa")
    same_output(remote, local)
    assert remote.inputs == (url,)


async def test_s3_prefix_of_parquet_files_is_one_dataset(s3: S3Server, tmp_path: Path) -> None:
    rows: list[str | None] = [r or None for r in maid_lines(3, 9000).decode().splitlines()]
    local = tmp_path / "dataset"
    local.mkdir()
    for i, lo in enumerate(range(0, len(rows), 4000)):
        table = pa.table(
            {"n": pa.array(range(len(rows[lo : lo + 4000]))), "idfa": rows[lo : lo + 4000]}
        )
        pq.write_table(table, local / f"part-{i}.parquet", row_group_size=700)
        s3.put(f"dataset/part-{i}.parquet", (local / f"part-{i}.parquet").read_bytes())
    s3.put("dataset/_SUCCESS", b"")
    remote = await run([f"s3://{BUCKET}/dataset/"], tmp_path / "a", column="idfa")
    same_output(remote, await run([local], tmp_path / "b", column="idfa"))
    single = await run([f"s3://{BUCKET}/dataset/part-0.parquet"], tmp_path / "c", column="idfa")
    assert single.rows_read == 4000


async def test_missing_object_and_missing_backend_are_one_line(
    s3: S3Server, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=rf"s3://{BUCKET}/nope\.txt: no such object"):
        await run([f"s3://{BUCKET}/nope.txt"], tmp_path / "a")


async def test_a_look_ahead_is_what_the_lookups_then_take(s3: S3Server, tmp_path: Path) -> None:
    data = maid_lines(11, 20_000)
    (tmp_path / "local.txt").write_bytes(data)
    url = s3.put("ahead/export.txt", data)
    first = RemoteObject.lookup(url).identity()
    look_ahead([url])
    try:
        taken = RemoteObject.lookup(url)  # waits for the look-ahead, first block included
        assert taken.identity() == first
        assert taken.first_block and data.startswith(taken.first_block[0])
        # Replaced now: every lookup of the command still gets what was found, one identity
        # for the journal and the read.
        s3.put("ahead/export.txt", maid_lines(12, 100))
        assert RemoteObject.lookup(url) is taken
    finally:
        forget_look_ahead()
    assert RemoteObject.lookup(url).identity() != first  # asked again once forgotten
    s3.put("ahead/export.txt", data)
    look_ahead([url])
    try:
        local = await run([tmp_path / "local.txt"], tmp_path / "b")
        same_output(await run([url], tmp_path / "a"), local)
    finally:
        forget_look_ahead()


async def test_a_failed_look_ahead_is_what_the_lookup_reports(s3: S3Server, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/ahead/late.txt"
    look_ahead([url])
    try:
        s3.put("ahead/late.txt", maid_lines(15, 100))  # there now, not when looked up
        with pytest.raises(InputError, match=r"ahead/late\.txt: no such object"):
            await run([url], tmp_path / "a")
    finally:
        forget_look_ahead()
    assert (await run([url], tmp_path / "b")).rows_read == 111


def test_a_forgotten_look_ahead_is_not_taken(s3: S3Server) -> None:
    url = s3.put("ahead/forgotten.txt", maid_lines(13, 100))
    before = RemoteObject.lookup(url).identity()
    look_ahead([url])
    forget_look_ahead()  # as the command line does when its command ends
    s3.put("ahead/forgotten.txt", maid_lines(14, 100))
    assert RemoteObject.lookup(url).identity() != before


def test_credentials_in_a_url_are_never_shown(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncsync",
            "prepare",
            "-o",
            str(tmp_path / "o"),
            "https://user:hunter2@127.0.0.1:9/export.txt?X-Amz-Signature=s3cr3t",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "hunter2" not in done.stderr and "s3cr3t" not in done.stderr
    assert "https://127.0.0.1:9/export.txt" in done.stderr


# -- a server that dies, an object that changes ---------------------------------------------


@pytest.fixture
def own_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A server of this test alone (it gets killed)."""
    server = S3Server(free_port())
    server.start()
    credentials(monkeypatch, server)
    yield server
    server.kill()


def restart_later(server: S3Server, key: str, data: bytes, delay: float) -> threading.Thread:
    """Start ``server`` again after ``delay`` seconds with the same object (its memory is lost
    with the process), as a store coming back after an outage."""

    def again() -> None:
        time.sleep(delay)
        server.start()
        server.put(key, data)

    thread = threading.Thread(target=again)
    thread.start()
    return thread


def test_stream_resumes_where_it_stopped_when_the_server_comes_back(own_s3: S3Server) -> None:
    data = os.urandom(3 << 20)
    url = own_s3.put("big.bin", data)
    stream = RemoteStream(RemoteObject.lookup(url), block_bytes=64 * 1024, retries=6)
    try:
        head = stream.read(3 << 19)
        own_s3.kill()
        thread = restart_later(own_s3, "big.bin", data, 0.5)
        rest = stream.read(-1)
        thread.join()
    finally:
        stream.close()
    assert hashlib.sha256(head + rest).digest() == hashlib.sha256(data).digest()


def test_stream_fails_clearly_when_the_server_stays_down(own_s3: S3Server) -> None:
    url = own_s3.put("big.bin", os.urandom(3 << 20))
    stream = RemoteStream(RemoteObject.lookup(url), block_bytes=64 * 1024, retries=1)
    try:
        stream.read(3 << 19)
        own_s3.kill()
        with pytest.raises(OSError, match=r"reading failed at byte \d+ after 2 attempts"):
            stream.read(-1)
    finally:
        stream.close()


def test_an_object_replaced_during_the_read_is_an_error(own_s3: S3Server) -> None:
    url = own_s3.put("big.bin", os.urandom(3 << 20))
    stream = RemoteStream(RemoteObject.lookup(url), block_bytes=64 * 1024)
    try:
        stream.read(3 << 19)
        own_s3.put("big.bin", os.urandom(3 << 20))
        with pytest.raises(OSError, match="changed while being read"):
            stream.read(-1)
    finally:
        stream.close()


HELD_AFTER = 6 << 20
"""Bytes of answer a connection through the proxy carries before the first cut."""


@pytest.fixture
def s3_via_proxy(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[CuttableProxy]:
    """The shared server reached through a proxy whose connections a test cuts. Until the cut,
    a connection carries at most ``HELD_AFTER`` bytes of answer: a test that reads less before
    the cut and more after it needs the network after it."""
    proxy = CuttableProxy(s3.port, hold_after=HELD_AFTER)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.close()


def restore_later(proxy: CuttableProxy, delay: float) -> threading.Thread:
    def again() -> None:
        time.sleep(delay)
        proxy.restore()

    thread = threading.Thread(target=again)
    thread.start()
    return thread


BIG = 24 << 20
"""Twice what a test reads before and after a cut: the read after it needs the network."""


def test_s3_read_cut_mid_stream_resumes_and_gives_every_byte_once(
    s3: S3Server, s3_via_proxy: CuttableProxy
) -> None:
    data = os.urandom(BIG)
    url = s3.put("cut/same.bin", data)
    stream = RemoteStream(RemoteObject.lookup(url), block_bytes=64 * 1024, retries=6)
    try:
        head = stream.read(3 << 20)
        s3_via_proxy.cut()
        thread = restore_later(s3_via_proxy, 0.5)
        try:
            rest = stream.read(-1)
        finally:
            thread.join()
    finally:
        stream.close()
    assert hashlib.sha256(head + rest).digest() == hashlib.sha256(data).digest()


def test_s3_read_cut_mid_stream_refuses_an_object_replaced_meanwhile(
    s3: S3Server, s3_via_proxy: CuttableProxy
) -> None:
    """Other bytes of the same size under the key while the connection is down: the resumed
    read must not hand out a mix of the two."""
    url = s3.put("cut/swapped.bin", os.urandom(BIG))
    stream = RemoteStream(RemoteObject.lookup(url), block_bytes=64 * 1024, retries=6)
    try:
        stream.read(3 << 20)
        s3_via_proxy.cut()
        s3.put("cut/swapped.bin", os.urandom(BIG))
        thread = restore_later(s3_via_proxy, 0.5)
        try:
            with pytest.raises(OSError, match="changed while being read"):
                stream.read(8 << 20)  # short of the end: the check at the end is not reached
        finally:
            thread.join()
    finally:
        stream.close()


def test_a_new_read_of_an_object_replaced_since_its_lookup_never_mixes_versions(
    s3: S3Server,
) -> None:
    """The first block of the object is kept from the first read; a second read that asks
    the store for the rest after the object was replaced must get an error, not new bytes
    after old ones."""
    data = os.urandom(6 << 20)
    obj = RemoteObject.lookup(s3.put("swap.bin", data))
    first = RemoteStream(obj)
    try:
        assert first.read(-1) == data
    finally:
        first.close()
    s3.put("swap.bin", os.urandom(6 << 20))
    second = RemoteStream(obj)
    try:
        with pytest.raises(OSError, match="changed while being read"):
            second.read(3 << 20)  # short of the end: the check at the end is not reached
    finally:
        second.close()


@pytest.mark.parametrize("comes_back", [True, False])
async def test_prepare_with_the_server_killed_mid_read_never_loses_rows(
    own_s3: S3Server, tmp_path: Path, comes_back: bool
) -> None:
    data = maid_lines(4, 60_000)
    url = own_s3.put("export.txt", data)
    (tmp_path / "local.txt").write_bytes(data)
    expected = await run([tmp_path / "local.txt"], tmp_path / "expected")
    threads: list[threading.Thread] = []

    def kill_once(event: Event) -> None:
        if isinstance(event, ChunkHashed) and own_s3.proc is not None and not threads:
            own_s3.kill()
            if comes_back:
                threads.append(restart_later(own_s3, "export.txt", data, 0.3))
            else:
                threads.append(threading.Thread(target=lambda: None))

    try:
        result = await run([url], tmp_path / "out", reporter=kill_once)
    except InputError as exc:
        assert not comes_back
        assert "export.txt: cannot read" in str(exc)
        assert not (tmp_path / "out" / "manifest.json").exists()
    else:
        same_output(result, expected)
    finally:
        for t in threads:
            if t.ident is not None:
                t.join()
    assert threads, "the server was never killed"


# -- the sync journal ---------------------------------------------------------------------


async def test_an_object_changed_between_runs_is_refused_and_restart_names_the_audience(
    s3: S3Server, sandbox: Sandbox, tmp_path: Path
) -> None:
    url = s3.put("journal/export.txt", maid_lines(5, 1500))
    opts = sync_options(tmp_path, sandbox, paths_per_call=2, max_file_bytes=600 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        with pytest.raises(Paused):
            await sync_audience(client, url, name="remote", **opts | {"max_wait": 0.0})
        resumed = await sync_audience(client, url, name="remote", **opts)
        assert resumed.resumed
        s3.put("journal/export.txt", maid_lines(6, 1500))  # same size, other bytes
        with pytest.raises(Paused):
            await sync_audience(client, url, name="remote2", **opts | {"max_wait": 0.0})
        s3.put("journal/export.txt", maid_lines(7, 1500))
        with pytest.raises(InputChangedError, match=rf"s3://{BUCKET}/journal/export\.txt"):
            await sync_audience(client, url, name="remote2", **opts)
        # The abandoned job made its audience: --restart makes no second one of the name, it
        # names the audience, which the changed object then replaces.
        with pytest.raises(NameTakenError) as refused:
            await sync_audience(client, url, name="remote2", restart=True, **opts)
        made = refused.value.audience_id
        result = await sync_audience(client, url, audience_id=made, action="replace", **opts)
    assert not result.resumed and result.rows_read == resumed.rows_read
    assert [a.audience_id for a in sandbox.state.audiences.values() if a.name == "remote2"] == [
        made
    ]


# -- a prepared directory in object storage ----------------------------------------------


async def test_prepared_directory_in_s3_is_verified_then_delivered(
    s3: S3Server, sandbox: Sandbox, tmp_path: Path
) -> None:
    data = maid_lines(8, 3000)
    (tmp_path / "export.txt").write_bytes(data)
    prepared = await run(
        [tmp_path / "export.txt"], tmp_path / "prep", max_file_bytes=400 * DIGEST_LINE
    )
    assert len(prepared.parts) > 1
    for path in sorted((tmp_path / "prep").iterdir()):
        s3.put(f"prep/{path.name}", path.read_bytes())
    opts = sync_options(tmp_path, sandbox)
    del opts["workers"], opts["max_file_bytes"]
    async with client_for(sandbox) as client:
        result = await sync_audience(client, prepared=f"s3://{BUCKET}/prep/", name="p", **opts)
        assert result.rows_written == prepared.rows_written
        assert result.parts == len(prepared.parts)
        for _ in range(500):
            (audience,) = await client.get_audiences(ADVERTISER, [str(result.audience_id)])
            if audience.is_valid:
                break
            await asyncio.sleep(0.01)
    members = set(sandbox.members(str(result.audience_id)))
    expected = set()
    for part in prepared.parts:
        expected |= set(part.path.read_text().split())
    assert members == expected

    # A part altered in the store: refused naming it, before any request.
    s3.put(f"prep/{prepared.parts[-1].file}", b"0" * prepared.parts[-1].bytes)
    shutil.rmtree(tmp_path / "state" / "prepared")
    async with client_for(sandbox) as client:
        with pytest.raises(InputError, match=rf"part {prepared.parts[-1].file} has another MD5"):
            await sync_audience(client, prepared=f"s3://{BUCKET}/prep/", name="q", **opts)
        assert client.stats.api_calls == 0


def test_shown_names_drop_user_info_and_query() -> None:
    from asyncsync.remote import display_name

    assert display_name("https://u:p@host:9/x.txt?X-Amz-Signature=1") == "https://host:9/x.txt"
    assert display_name("s3://bucket/key.txt") == "s3://bucket/key.txt"
    assert display_name("gs://bucket/dir/") == "gs://bucket/dir/"


async def test_https_style_url_without_range_support_is_streamed(tmp_path: Path) -> None:
    """A plain HTTP server that ignores Range (Python's own): read as one streamed GET."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "www"
    served.mkdir()
    data = maid_lines(9, 20_000)
    (served / "export.txt").write_bytes(data)
    (tmp_path / "local.txt").write_bytes(data)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(served))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever)
        thread.start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/export.txt"
            remote = await run([url], tmp_path / "a")
        finally:
            httpd.shutdown()
            thread.join()
    same_output(remote, await run([tmp_path / "local.txt"], tmp_path / "b"))
