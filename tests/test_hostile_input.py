"""Hostile input: arbitrary bytes, huge lines, NUL bytes, invalid UTF-8, CSV quoting, mixed line
ends, damaged compression, and hostile audience names.

Whatever the bytes, ``prepare`` either refuses the input with one clear :class:`InputError` or
accounts for every line: ``rows_read`` is the number of lines (CSV records), each counted valid
or rejected with a reason, and the parts hold exactly the per-line oracle's digests.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import itertools
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner
from helpers.api import ADVERTISER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncsync.cli import main
from asyncsync.errors import InputError, UsageError
from asyncsync.pipeline.prepare import PrepareResult, prepare
from asyncsync.pipeline.source import BOM, binary_reason
from asyncsync.rules.hashing import REASONS
from asyncsync.rules.ids import Reject, hash_id, normalize
from asyncsync.sandbox import Sandbox
from asyncsync.tiktok.client import TikTokClient

_counter = itertools.count()

MAID = "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25"

LINE_PIECES = st.sampled_from(
    [
        MAID.encode(),
        MAID.upper().encode(),
        b"  " + MAID.encode() + b"\t",
        b"00000000-0000-0000-0000-000000000000",
        b"JaneDoe+tag@Gmail.com",
        b"user@.com",
        b"+1 (650) 555-0101",
        b"00374 93 828 222",
        b"a" * 64,
        hashlib.sha256(b"x").hexdigest().encode(),
        b"",
        b" ",
        b"\r",
        b"\xff\xfe",
        b"\xc3\x28",  # invalid UTF-8 sequence
        b"\xef\xbb\xbf",  # a BOM in the middle of the file
        "é@例え.jp".encode(),
        b'"' + MAID.encode() + b'"',
        b"\x0b\x0c",
        b"5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b2",  # one hex digit short
    ]
)
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b"\r\r\n"])
ID_TYPES = ["auto", "email", "phone", "sha256"]


@st.composite
def hostile_text(draw: st.DrawFn) -> bytes:
    """Lines built from tricky pieces and random bytes, joined by mixed line ends."""
    out = bytearray()
    if draw(st.booleans()):
        out += b"\xef\xbb\xbf"
    for _ in range(draw(st.integers(0, 40))):
        if draw(st.integers(0, 3)) == 0:
            out += draw(st.binary(max_size=80)).replace(b"\x00", b"\x01")
        else:
            out += draw(LINE_PIECES)
        out += draw(LINE_ENDS)
    if draw(st.booleans()):
        out += draw(LINE_PIECES)  # a last line without a line end
    return bytes(out)


def oracle_lines(data: bytes) -> list[bytes]:
    """The data lines of a plain text input as docs/normalization.md defines them."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def oracle(values: list[bytes], id_type: str) -> tuple[dict[str, int], set[str]]:
    rejected = {r.value: 0 for r in REASONS}
    digests: set[str] = set()
    for value in values:
        result = normalize(value, id_type)
        if isinstance(result, Reject):
            rejected[result.value] += 1
        else:
            digests.add(hash_id(result, id_type, "sha256").decode())
    return rejected, digests


def read_parts(result: PrepareResult) -> list[str]:
    lines: list[str] = []
    for part in result.parts:
        text = part.path.read_text()
        assert text.endswith("\n") and "\r" not in text
        lines += text.splitlines()
    return lines


def check_accounting(result: PrepareResult) -> None:
    assert result.rows_read == result.rows_valid + result.rows_invalid
    assert sum(result.rejected.values()) == result.rows_invalid
    assert set(result.rejected) == {r.value for r in REASONS}
    assert result.rows_written == result.rows_valid - result.duplicates
    assert sum(p.rows for p in result.parts) == result.rows_written


def run_prepare(path: Path, out: Path, **options: object) -> PrepareResult:
    async def go() -> PrepareResult:
        return await asyncio.wait_for(
            prepare(path, out_dir=out, workers=1, max_file_bytes=4096, **options), timeout=60
        )

    return asyncio.run(go())


def fresh(tmp_path: Path) -> tuple[Path, Path]:
    n = next(_counter)
    return tmp_path / f"in-{n}.txt", tmp_path / f"out-{n}"


PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(data=hostile_text(), id_type=st.sampled_from(ID_TYPES))
def test_every_line_of_hostile_text_is_counted_valid_or_rejected_with_a_reason(
    tmp_path: Path, data: bytes, id_type: str
) -> None:
    src, out = fresh(tmp_path)
    src.write_bytes(data)
    lines = oracle_lines(data)
    rejected, digests = oracle(lines, id_type)
    try:
        result = run_prepare(src, out, id_type=id_type)
    except InputError as exc:
        # Only an input without a single valid line may be refused, with one clear line, or one
        # whose first bytes say it is compressed (gzip or zstd) while it is not, or whose head is
        # not text by the documented rule (a known binary format or UTF-16, or mostly not text).
        head = data[len(BOM) :] if data.startswith(BOM) else data
        assert (
            not digests
            or data.startswith((b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd"))
            or binary_reason(head[: 64 * 1024]) is not None
        ), exc
        assert "\n" not in str(exc) and str(src) in str(exc)
        return
    check_accounting(result)
    assert result.rows_read == len(lines)
    assert result.rejected == rejected
    written = read_parts(result)
    assert len(written) == len(set(written))
    assert set(written) == digests


@st.composite
def csv_field(draw: st.DrawFn) -> str:
    base = draw(
        st.sampled_from(
            [MAID, MAID.upper(), f" {MAID} ", "", "not-an-id", "a,b", 'say "hi"', "x\ny", "é"]
        )
    )
    quoted = draw(st.booleans()) or any(c in base for c in ',"\n')
    return '"' + base.replace('"', '""') + '"' if quoted else base


@st.composite
def hostile_csv(draw: st.DrawFn) -> str:
    rows = [["id", "note"]]
    for _ in range(draw(st.integers(1, 25))):
        width = draw(st.integers(0, 3))
        rows.append([draw(csv_field()) for _ in range(width)])
    ends = draw(st.lists(st.sampled_from(["\n", "\r\n"]), min_size=len(rows), max_size=len(rows)))
    return "".join(",".join(r) + e for r, e in zip(rows, ends, strict=True))


@PROPERTY
@given(text=hostile_csv())
def test_every_csv_record_is_one_row_whatever_its_quoting_and_line_ends(
    tmp_path: Path, text: str
) -> None:
    src, out = fresh(tmp_path)
    src.write_bytes(text.encode())
    records = list(csv.reader(io.StringIO(text, newline="")))[1:]
    values = [r[0].encode() if r else b"" for r in records]
    rejected, digests = oracle(values, "auto")
    try:
        result = run_prepare(src, out, column="id")
    except InputError as exc:
        assert not digests, exc
        return
    check_accounting(result)
    assert result.rows_read == len(records)
    assert result.rejected == rejected
    assert set(read_parts(result)) == digests


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1)
    if compression == "zstd":
        # Two frames, as a file appended to (or written by a multi-threaded zstd) holds.
        cut = len(data) // 2
        zc = zstandard.ZstdCompressor(level=1)
        return zc.compress(data[:cut]) + zc.compress(data[cut:])
    return data


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_a_head_of_nul_bytes_refuses_the_file_and_a_few_nul_bytes_are_malformed_lines(
    tmp_path: Path, compression: str
) -> None:
    head, out = fresh(tmp_path)
    head.write_bytes(compress(MAID.encode() + b"\n" + b"\x00" * 4096 + b"\n", compression))
    with pytest.raises(InputError, match="not a text file"):
        run_prepare(head, out)

    few, out = fresh(tmp_path)
    few.write_bytes(compress(MAID.encode() + b"\n\x00\x00\n", compression))
    result = run_prepare(few, out)
    check_accounting(result)
    assert (result.rows_read, result.rejected["malformed"], result.rows_written) == (2, 1, 1)

    late, out = fresh(tmp_path)
    filler = (MAID + "\n").encode() * 3000  # past the 64 KiB sniffed for binary data
    data = filler + b"\x00" + MAID.encode() + b"\n" + MAID.encode() + b"\x00\n"
    late.write_bytes(compress(data, compression))
    result = run_prepare(late, out)
    check_accounting(result)
    assert result.rows_read == 3002
    assert result.rejected["malformed"] == 2
    assert result.rows_written == 1


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_a_ten_megabyte_line_is_one_malformed_row_not_a_hang(
    tmp_path: Path, compression: str
) -> None:
    src, out = fresh(tmp_path)
    data = MAID.encode() + b"\n" + b"7" * 10_000_000 + b"\r\n" + MAID.upper().encode() + b"\n"
    src.write_bytes(compress(data, compression))
    result = run_prepare(src, out)
    check_accounting(result)
    assert (result.rows_read, result.rejected["malformed"], result.rows_written) == (3, 1, 1)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: gzip.compress(b)[:-20], id="truncated-gzip"),
        pytest.param(lambda b: gzip.compress(b)[:40] + b"\xde\xad" * 50, id="corrupt-gzip"),
        pytest.param(lambda b: zstandard.ZstdCompressor().compress(b)[:-9], id="truncated-zstd"),
    ],
)
def test_damaged_compressed_input_is_one_clear_input_error(tmp_path: Path, damage: object) -> None:
    src, out = fresh(tmp_path)
    raw = "".join(f"{MAID[:-6]}{i:06x}\n" for i in range(20_000)).encode()
    assert callable(damage)
    src.write_bytes(damage(raw))
    with pytest.raises(InputError) as info:
        run_prepare(src, out)
    message = str(info.value)
    assert str(src) in message and "\n" not in message
    assert not list(out.glob("manifest.json"))


# -- audience names ----------------------------------------------------------------------------


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """The CLI through click's runner on a worker thread (its event loop runs there, while the
    sandbox keeps serving on the test's loop)."""

    def run() -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return await asyncio.wait_for(asyncio.to_thread(run), 60)


HOSTILE_NAMES = {
    "empty": "",
    "129 characters": "n" * 129,
    "newline": "nightly\nbuyers",
    "escape sequence": "nightly \x1b[31mred",
    "NUL": "night\x00ly",
    "DEL": "nightly\x7f",
}


@pytest.mark.parametrize("label", sorted(HOSTILE_NAMES))
async def test_hostile_audience_name_is_refused_before_any_request(
    sandbox: Sandbox, tmp_path: Path, label: str
) -> None:
    name = HOSTILE_NAMES[label]
    src = tmp_path / "ids.txt"
    src.write_text(MAID + "\n")
    env = {"TIKTOK_ACCESS_TOKEN": sandbox.issue_token(), "ASYNCSYNC_DEBUG": ""}
    if "\x00" in name:
        # No process can receive a NUL in an argument; the library gets it instead.
        async with TikTokClient(env["TIKTOK_ACCESS_TOKEN"], api_base=sandbox.api_base) as client:
            from asyncsync import sync_audience

            with pytest.raises(UsageError, match="control character"):
                await sync_audience(
                    client, src, advertiser_id=ADVERTISER, name=name, state_dir=tmp_path / "s"
                )
        assert sandbox.request_counts() == {}
        return
    code, out, err = await cli(
        "sync", str(src), "--advertiser-id", ADVERTISER, "--name", name,
        "--api-base", sandbox.api_base, "--state-dir", str(tmp_path / "state"), env=env,
    )  # fmt: skip
    assert code == 2, err
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("asyncsync: error: --name") or "--name" in line, line
    assert sandbox.request_counts() == {}
    if label != "newline":
        return
    code, out, err = await cli(
        "audiences", "rename", "7100000000000000001", name,
        "--advertiser-id", ADVERTISER, "--api-base", sandbox.api_base, env=env,
    )  # fmt: skip
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert sandbox.request_counts() == {}


async def test_non_ascii_name_of_128_characters_reaches_tiktok_unchanged(
    sandbox_factory: object, tmp_path: Path
) -> None:
    from asyncsync import sync_audience

    name = ("Käufer 夜間 📱 " * 20)[:128]
    assert len(name) == 128
    src = tmp_path / "ids.txt"
    src.write_text("".join(f"{MAID[:-6]}{i:06x}\n" for i in range(1200)))
    assert callable(sandbox_factory)
    async with sandbox_factory() as sb:
        async with TikTokClient(sb.issue_token(), api_base=sb.api_base) as client:
            result = await sync_audience(
                client, src, advertiser_id=ADVERTISER, name=name, state_dir=tmp_path / "s"
            )
        [audience] = sb.state.snapshot()["audiences"]
    assert audience["audience_id"] == result.audience_id
    assert audience["name"] == name
