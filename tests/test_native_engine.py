"""The native engine equals the Python reference engine: digests, counts, samples and parts.

Random and adversarial chunks: every byte value, CR/LF, lines at the edges of a chunk (no final
line end, empty chunks, blank lines), lengths around SHA-256's and MD5's 64-byte blocks and the
56-byte padding limit, every ID kind and both hashes; values with line ends inside (CSV).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncsync.pipeline.parts import MAX_LANES, PartSource, part_lanes, write_part, write_parts
from asyncsync.rules.engine import native_module
from asyncsync.rules.hashing import ChunkHashes, hash_arrow, hash_chunk, hash_values
from asyncsync.rules.ids import is_national_phone

native = native_module()
pytestmark = pytest.mark.skipif(native is None, reason="the native engine is not built")

KINDS = ["auto", "maid", "email", "phone", "sha256", "md5"]
ALGOS = {"email": ["sha256"], "phone": ["sha256"], "sha256": ["sha256"], "md5": ["md5"]}
SHA_IMPLS = ["portable", "sha-ni"]


def same(a: ChunkHashes, b: ChunkHashes) -> None:
    assert a.digests == b.digests
    assert (a.rows, a.rejected, a.sample, a.digest_size, a.national) == (
        b.rows,
        b.rejected,
        b.sample,
        b.digest_size,
        b.national,
    )


def maid_line(draw: st.DrawFn) -> bytes:
    text = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    text = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    how = draw(st.sampled_from(["ok", "ok", "pad", "char", "cut", "zero", "ZERO", "dash", "cr"]))
    if how == "pad":
        text = draw(st.sampled_from([" ", "\t", "\x0b", "\x0c", "\r"])) + text + " "
    elif how == "char":
        i = draw(st.integers(0, 35))
        text = text[:i] + chr(draw(st.integers(0, 255))) + text[i + 1 :]
    elif how == "cut":
        text = text[: draw(st.integers(0, 37))]
    elif how in ("zero", "ZERO"):
        text = "00000000-0000-0000-0000-000000000000"
    elif how == "dash":
        text = text.replace("-", draw(st.sampled_from(["", "_", "--"])), 1)
    elif how == "cr":
        text = "\r" + text + "\r\r"
    return text.encode("latin-1")


def email_line(draw: st.DrawFn) -> bytes:
    # Lengths around 55/56/64/119/120 bytes exercise the hash's padding and block edges.
    local = draw(st.text("abcXYZ.+_- 1\t\x7fé", min_size=0, max_size=70))
    domain = draw(
        st.sampled_from(
            ["gmail.com", "x..com", ".com", "a.b", "COM", "a.b.", "Mail.Co.UK", "b c.de", "ü.de"]
        )
    )
    at = draw(st.sampled_from(["@", "@", "@", "@@", "", " @ "]))
    pad = draw(st.sampled_from(["", " ", "\t", "\r"]))
    return f"{pad}{local}{at}{domain}{pad}".encode()


def phone_line(draw: st.DrawFn) -> bytes:
    prefix = draw(st.sampled_from(["", "+", "00", "0", "+0", "000", "(+", " + ", "x"]))
    body = draw(st.text("0123456789 -().+", min_size=0, max_size=22))
    return (prefix + body).encode()


def hashed_line(draw: st.DrawFn, width: int) -> bytes:
    alphabet = "0123456789abcdefABCDEFgG "
    return draw(st.text(alphabet, min_size=width - 2, max_size=width + 2)).encode()


@st.composite
def line(draw: st.DrawFn, kind: str) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice >= 7:  # any bytes at all, line ends excepted
        return draw(st.binary(max_size=70)).replace(b"\n", b"")
    if choice == 6:
        return draw(st.sampled_from([b"", b" ", b"\r", b"\t \x0b\x0c", b"\xef\xbb\xbf"]))
    if kind in ("auto", "maid"):
        return maid_line(draw)
    if kind == "email":
        return email_line(draw)
    if kind == "phone":
        return phone_line(draw)
    return hashed_line(draw, 64 if kind == "sha256" else 32)


@st.composite
def chunk(draw: st.DrawFn, kind: str) -> bytes:
    lines = draw(st.lists(line(kind), max_size=80))
    ends = [draw(st.sampled_from([b"\n", b"\n", b"\r\n"])) for _ in lines]
    blob = b"".join(x + e for x, e in zip(lines, ends, strict=True))
    if lines and draw(st.booleans()):
        blob = blob[: -len(ends[-1])]  # the last line without its line end
    return blob


@pytest.mark.parametrize("sha", SHA_IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_native_chunk_hasher_equals_the_python_engine(
    kind: str, sha: str, data: st.DataObject
) -> None:
    assert native is not None
    before = native.sha256_impl()
    try:
        native.sha256_impl(sha)
    except ValueError:
        pytest.skip("this CPU has no SHA extensions")
    try:
        algo = data.draw(st.sampled_from(ALGOS.get(kind, ["sha256", "md5"])))
        blob = data.draw(chunk(kind))
        cap = data.draw(st.sampled_from([0, 1, 3, 100]))
        fast = hash_chunk(blob, id_type=kind, hash_algo=algo, sample_cap=cap, engine="native")
        slow = hash_chunk(blob, id_type=kind, hash_algo=algo, sample_cap=cap, engine="python")
        same(fast, slow)
    finally:
        native.sha256_impl(before)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_native_value_hasher_equals_the_python_engine(kind: str, data: st.DataObject) -> None:
    algo = data.draw(st.sampled_from(ALGOS.get(kind, ["sha256", "md5"])))
    values = data.draw(
        st.lists(
            st.one_of(
                line(kind),
                line(kind).map(lambda v: b"\n" + v),
                line(kind).map(lambda v: v + b"\r\n" + v),
            ),
            max_size=50,
        )
    )
    cap = data.draw(st.sampled_from([0, 2, 100]))
    fast = hash_values(values, id_type=kind, hash_algo=algo, sample_cap=cap, engine="native")
    slow = hash_values(values, id_type=kind, hash_algo=algo, sample_cap=cap, engine="python")
    same(fast, slow)


def arrow_values(kind: str) -> st.SearchStrategy[bytes | None]:
    """A Parquet cell: an ID-like value, a null, or a value holding a line end."""
    return st.one_of(
        line(kind),
        line(kind),
        st.none(),
        line(kind).map(lambda v: v + b"\n"),
        line(kind).map(lambda v: b"\r\n" + v),
    )


def as_lines(values: list[bytes | None]) -> bytes:
    """The same values as text: a null is a blank line, a value holding a line end a NUL."""
    return b"".join((b"\x00" if v and b"\n" in v else v or b"") + b"\n" for v in values)


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arrow_hasher_equals_the_python_engine_on_the_values_as_lines(
    kind: str, large: bool, data: st.DataObject
) -> None:
    """Straight from an Arrow array's buffers (a slice of it, so from an offset, with nulls)
    the native engine gives what the Python engine gives for the values written as lines."""
    import pyarrow as pa

    algo = data.draw(st.sampled_from(ALGOS.get(kind, ["sha256", "md5"])))
    values = data.draw(st.lists(arrow_values(kind), max_size=60))
    lo = data.draw(st.integers(0, len(values)))
    hi = data.draw(st.integers(lo, len(values)))
    country = data.draw(st.sampled_from([None, "GB"])) if kind == "phone" else None
    cap = data.draw(st.sampled_from([0, 2, 100]))
    array = pa.array(values, type=pa.large_binary() if large else pa.binary())[lo:hi]
    validity, offsets, raw = array.buffers()
    fast = hash_arrow(
        raw,
        offsets,
        wide=large,
        first=array.offset,
        rows=len(array),
        validity=validity if array.null_count else None,
        id_type=kind,
        hash_algo=algo,
        sample_cap=cap,
        default_country=country,
        engine="native",
    )
    slow = hash_chunk(
        as_lines(values[lo:hi]),
        id_type=kind,
        hash_algo=algo,
        sample_cap=cap,
        default_country=country,
        engine="python",
    )
    if fast is None:  # national phone numbers to count: the caller takes the line path
        assert kind == "phone" and country is None and slow.rejected[1] > 0
        return
    same(fast, slow)


def test_arrow_hasher_refuses_offsets_outside_the_values() -> None:
    import numpy as np

    data = b"abc"
    for offsets in ([0, 2, 5], [0, 2, 1], [-1, 2, 3]):
        with pytest.raises(ValueError, match="offsets"):
            hash_arrow(
                data,
                np.array(offsets, dtype=np.int32).tobytes(),
                wide=False,
                first=0,
                rows=2,
                id_type="maid",
            )
    with pytest.raises(ValueError, match="offsets"):  # fewer entries than rows + 1
        hash_arrow(
            data,
            np.array([0, 3], dtype=np.int64).tobytes(),
            wide=True,
            first=0,
            rows=2,
            id_type="maid",
        )
    with pytest.raises(ValueError, match="validity"):
        hash_arrow(
            data,
            np.zeros(10, dtype=np.int32).tobytes(),
            wide=False,
            first=0,
            rows=9,
            validity=b"\xff",
            id_type="maid",
        )


@pytest.mark.parametrize("country", [None, "GB", "US", "FR"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_phones_with_or_without_a_default_country_agree_across_engines(
    country: str | None, data: st.DataObject
) -> None:
    """Numbers handed back for a default country, and the count of national numbers."""
    blob = data.draw(chunk("phone"))
    fast = hash_chunk(blob, id_type="phone", default_country=country, engine="native")
    slow = hash_chunk(blob, id_type="phone", default_country=country, engine="python")
    same(fast, slow)
    values = blob.split(b"\n")
    fast = hash_values(values, id_type="phone", default_country=country, engine="native")
    slow = hash_values(values, id_type="phone", default_country=country, engine="python")
    same(fast, slow)


def test_every_byte_at_every_position_of_a_mobile_id_agrees_across_engines() -> None:
    """The native rule checks a mobile ID 16 bytes at a time: each of the 256 byte values at
    each of the 36 positions, in an ID with letters of both cases and in the all-zero ID (where
    one non-zero digit makes it valid), is judged and hashed as the reference does."""
    bases = (b"0a1B2c3D-4e5F-6a7B-8c9D-0e1F2a3B4c5D", b"00000000-0000-0000-0000-000000000000")
    lines = [
        base[:i] + bytes([value]) + base[i + 1 :]
        for base in bases
        for i in range(36)
        for value in range(256)
    ]
    blob = b"\n".join(lines) + b"\n"
    fast = hash_chunk(blob, id_type="maid", sample_cap=100_000, engine="native")
    slow = hash_chunk(blob, id_type="maid", sample_cap=100_000, engine="python")
    same(fast, slow)
    assert fast.valid > 36 * 22 and fast.rejected[1] > 36 * 200  # both outcomes are exercised


def test_every_byte_at_every_position_of_an_email_agrees_across_engines() -> None:
    """The native rule judges a plain email (ASCII, no space, at most 64 bytes) 16 bytes at a
    time and every other line byte by byte: each of the 256 byte values at each position of
    addresses of lengths around those 16-byte blocks and the 64-byte limit, with a tag, with
    dots in every place, is judged and hashed as the reference does."""
    bases = [
        b"Jo.Doe+News@Mail.Example.COM",
        b"a@b.c",
        b"x" * 9 + b"+t@d.io",  # 16 bytes
        b"user.name" + b"@" + b"d" * 20 + b".com",  # 34 bytes
        b"U" * 40 + b"@e.x" + b"y" * 19,  # 63 bytes
        b"u" * 50 + b"@do.main" + b"z" * 6,  # 64 bytes
        b"v" * 51 + b"@do.main" + b"z" * 6,  # 65 bytes: past the block path
    ]
    lines = [
        base[:i] + bytes([value]) + base[i + 1 :]
        for base in bases
        for i in range(len(base))
        for value in range(256)
    ]
    lines += [b"@a.b", b"a@", b"a@.b", b"a@b.", b"a@b..c", b"a@bc", b"+a@b.c", b"a+@b.c", b"a@@b.c"]
    blob = b"\n".join(lines) + b"\n"
    fast = hash_chunk(blob, id_type="email", sample_cap=1_000_000, engine="native")
    slow = hash_chunk(blob, id_type="email", sample_cap=1_000_000, engine="python")
    same(fast, slow)
    assert fast.valid > 7 * 40 and fast.rejected[1] > 7 * 100  # both outcomes are exercised


@pytest.mark.parametrize("kind", ["maid", "email", "phone"])
def test_bulk_sample_chunks_agree(kind: str, tmp_path: Path) -> None:
    from asyncsync.sample import write_sample

    path = tmp_path / "sample.txt"
    write_sample(path, 60_000, kind=kind, seed=7)
    blob = path.read_bytes()
    for algo in ALGOS.get(kind, ["sha256", "md5"]):
        fast = hash_chunk(blob, id_type=kind, hash_algo=algo, engine="native")
        slow = hash_chunk(blob, id_type=kind, hash_algo=algo, engine="python")
        same(fast, slow)
        assert fast.valid > 50_000


def test_non_ascii_emails_are_handed_back_and_keep_their_place() -> None:
    blob = "a@b.com\nÄNNE@Ü.de\n x\u00a0y@z.com\nÉ+x@y.fr\n\xff@x.com\nb@c.com\n".encode(
        "utf-8", "surrogateescape"
    )
    blob = blob.replace("\xff".encode(), b"\xff")
    for cap in (0, 1, 100):
        fast = hash_chunk(blob, id_type="email", sample_cap=cap, engine="native")
        slow = hash_chunk(blob, id_type="email", sample_cap=cap, engine="python")
        same(fast, slow)
    assert hashlib.sha256("änne@ü.de".encode()).digest() in fast.digests


@pytest.mark.parametrize("sha", SHA_IMPLS)
def test_native_digests_equal_hashlib_at_every_length(sha: str) -> None:
    assert native is not None
    before = native.sha256_impl()
    try:
        native.sha256_impl(sha)
    except ValueError:
        pytest.skip("this CPU has no SHA extensions")
    try:
        for n in [*range(300), 1000, 4096, 65536 + 7]:
            msg = os.urandom(n)
            assert native.digest(msg, 0) == hashlib.sha256(msg).digest(), n
            assert native.digest(msg, 1) == hashlib.md5(msg).digest(), n
    finally:
        native.sha256_impl(before)


@pytest.fixture(params=["avx2", "scalar"])
def md5_lanes_simd(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Each MD5 lanes test runs with the lanes side by side (AVX2, where the CPU has it) and
    one after another."""
    assert native is not None
    before = native.md5_lanes_simd()
    use = native.md5_lanes_simd(request.param == "avx2")
    if request.param == "avx2" and not use:
        pytest.skip("this CPU has no AVX2")
    try:
        yield use
    finally:
        native.md5_lanes_simd(before)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    feeds=st.lists(
        st.lists(st.integers(0, 700), min_size=1, max_size=MAX_LANES),
        min_size=0,
        max_size=6,
    ),
    lanes=st.integers(1, MAX_LANES),
)
def test_md5_lanes_equal_hashlib_however_the_bytes_are_fed(
    md5_lanes_simd: bool, feeds: list[list[int]], lanes: int
) -> None:
    """Lanes fed different lengths in each round (blocks in common side by side, the rest one
    by one), with partial blocks carried between rounds, empty feeds and lanes left idle."""
    assert native is not None
    states = native.md5_lanes(lanes)
    fed = [b""] * lanes
    for sizes in feeds:
        bufs = [os.urandom(sizes[i % len(sizes)] if i < len(sizes) else 0) for i in range(lanes)]
        native.md5_lanes_update(states, bufs)
        fed = [a + b for a, b in zip(fed, bufs, strict=True)]
    assert [native.md5_lanes_hexdigest(states, i) for i in range(lanes)] == [
        hashlib.md5(m).hexdigest() for m in fed
    ]


def test_md5_lanes_on_long_equal_feeds_as_the_part_writer_makes_them(md5_lanes_simd: bool) -> None:
    assert native is not None
    states = native.md5_lanes(MAX_LANES)
    slices = [os.urandom(65 * 8192) for _ in range(MAX_LANES)]
    for _ in range(3):
        native.md5_lanes_update(states, slices)
    for lane, piece in enumerate(slices):
        assert native.md5_lanes_hexdigest(states, lane) == hashlib.md5(piece * 3).hexdigest()


def test_md5_lanes_refuse_what_is_not_theirs() -> None:
    assert native is not None
    with pytest.raises(ValueError):
        native.md5_lanes(MAX_LANES + 1)
    states = native.md5_lanes(2)
    with pytest.raises(ValueError):
        native.md5_lanes_update(states, [b"x"])
    with pytest.raises(TypeError):
        native.md5_lanes_update(bytearray(5), [b"x"])
    with pytest.raises(IndexError):
        native.md5_lanes_hexdigest(states, 2)
    too_many = native.md5_lanes(MAX_LANES) + native.md5_lanes(1)  # contexts beyond 8 lanes
    with pytest.raises(TypeError):
        native.md5_lanes_update(too_many, [b"x"] * (MAX_LANES + 1))
    with pytest.raises(TypeError):
        native.md5_lanes_hexdigest(too_many, 0)


@pytest.mark.parametrize("engine", ["native", "python"])
def test_parts_written_together_equal_parts_written_alone(
    tmp_path: Path, md5_lanes_simd: bool, engine: str
) -> None:
    """write_parts over parts of unequal lengths whose rows come from several unique-run files,
    cut at odd rows: the same files and PartInfo as write_part for each."""
    size = 32
    runs = []
    for i, rows in enumerate([9000, 1, 20_000, 777, 30_001]):
        path = tmp_path / f"unique-{i}.bin"
        path.write_bytes(os.urandom(size * rows))
        runs.append((str(path), rows))
    batch = [
        (1, [PartSource(runs[0][0], 3, 9000), PartSource(runs[1][0], 0, 1)]),
        (2, [PartSource(runs[2][0], 0, 20_000)]),
        (3, []),
        (4, [PartSource(runs[3][0], 0, 777), PartSource(runs[4][0], 0, 12_345)]),
        (5, [PartSource(runs[4][0], 12_345, 30_001)]),
    ]
    together, alone = tmp_path / "together", tmp_path / "alone"
    together.mkdir()
    alone.mkdir()
    got = write_parts(batch, size, str(together), engine=engine)
    want = [write_part(i, src, size, str(alone), engine="python") for i, src in batch]
    assert [(p.index, p.file, p.rows, p.bytes, p.md5) for p in got] == [
        (p.index, p.file, p.rows, p.bytes, p.md5) for p in want
    ]
    for p, q in zip(got, want, strict=True):
        assert p.path == together / p.file
        assert p.path.read_bytes() == q.path.read_bytes()
        assert p.md5 == hashlib.md5(p.path.read_bytes()).hexdigest()
    assert not list(together.glob("*.tmp"))
    assert part_lanes("python") == 1
    assert part_lanes("native") == (MAX_LANES if md5_lanes_simd else 1)


@pytest.mark.parametrize("size", [16, 32])
def test_parts_are_byte_identical_with_either_engine(tmp_path: Path, size: int) -> None:
    digests = os.urandom(size * 3001)
    src = tmp_path / "unique.bin"
    src.write_bytes(digests)
    infos = {}
    for engine in ("native", "python"):
        out = tmp_path / engine
        out.mkdir()
        infos[engine] = write_part(
            1, [PartSource(str(src), 5, 3001)], size, str(out), engine=engine
        )
    a, b = infos["native"], infos["python"]
    assert a.path.read_bytes() == b.path.read_bytes()
    assert (a.md5, a.bytes, a.rows) == (b.md5, b.bytes, b.rows)
    assert a.md5 == hashlib.md5(a.path.read_bytes()).hexdigest()


def test_engine_env_forces_python_and_version_names_the_engine() -> None:
    def version(engine: str) -> str:
        env = {**os.environ, "ASYNCSYNC_ENGINE": engine}
        return subprocess.run(
            [sys.executable, "-m", "asyncsync", "--version"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout

    assert "engine: native" in version("auto")
    assert "engine: python (forced by ASYNCSYNC_ENGINE)" in version("python")


def _rows_strategy() -> st.SearchStrategy[tuple[int, list[bytes]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[int, list[bytes]]:
        size = draw(st.sampled_from([16, 32]))
        pool = draw(st.lists(st.binary(min_size=size, max_size=size), min_size=1, max_size=20))
        # Skewed rows: a shared leading 8 bytes (one bucket draws them all), repeats, zeros.
        prefix = draw(st.binary(min_size=8, max_size=8))
        skewed = [prefix + r[8:] for r in pool]
        rows = draw(
            st.lists(st.sampled_from(pool + skewed + [bytes(size), b"\xff" * size]), max_size=300)
        )
        return size, rows

    return build()


@settings(max_examples=150, deadline=None)
@given(case=_rows_strategy())
def test_native_sort_unique_equals_numpy(case: tuple[int, list[bytes]]) -> None:
    import numpy as np

    from asyncsync.pipeline.dedupe import sort_unique

    assert native is not None
    size, rows = case
    buf = bytearray(b"".join(rows))
    kept = native.sort_unique(buf, size)
    expected = sort_unique(np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, size))
    assert bytes(buf[: kept * size]) == expected.tobytes()
    assert kept == len(set(rows))


def test_native_sort_unique_on_a_million_random_rows_with_repeats() -> None:
    import numpy as np

    from asyncsync.pipeline.dedupe import sort_unique

    assert native is not None
    raw = os.urandom(32 * 500_000)
    blob = raw + raw[: 32 * 100_000]
    buf = bytearray(blob)
    kept = native.sort_unique(buf, 32)
    expected = sort_unique(np.frombuffer(blob, dtype=np.uint8).reshape(-1, 32))
    assert kept == 500_000
    assert bytes(buf[: kept * 32]) == expected.tobytes()


@settings(max_examples=60, deadline=None)
@given(case=_rows_strategy(), bits=st.integers(1, 16))
def test_native_bucketing_equals_numpy_stable_sort(
    case: tuple[int, list[bytes]], bits: int
) -> None:
    import numpy as np

    assert native is not None
    size, rows = case
    blob = b"".join(rows)
    mat = np.frombuffer(blob, dtype=np.uint8).reshape(-1, size)
    buckets = ((mat[:, 0].astype(np.uint32) << 8 | mat[:, 1]) >> (16 - bits)).astype(np.int64)
    order = np.argsort(buckets, kind="stable")
    data, counts = native.bucket_digests(blob, size, bits)
    assert data == mat[order].tobytes()
    assert (
        np.frombuffer(counts, dtype=np.int32).tolist()
        == np.bincount(buckets, minlength=1 << bits).tolist()
    )


def test_phones_without_an_international_prefix_can_be_handed_back() -> None:
    """With a default country (flag 1), numbers written without ``+``/``00`` go to Python."""
    assert native is not None
    blob = b"+44 7700 900123\n07700 900123\n447700900123\n0044 7700 900123\n\n+44 x\n"
    digests, rows, rejected, sample, deferred, national = native.hash_lines(blob, 2, 0, 1, 10)
    assert rows == 6
    assert national == 0  # with a default country, national numbers are read, not counted
    assert rejected == (1, 0, 0)
    assert [d[0] for d in deferred] == [1, 2, 5]
    assert [blob[s:e] for _, _, s, e in deferred] == [b"07700 900123", b"447700900123", b"+44 x"]
    assert len(digests) == 32 * 5  # two digests and three slots left for Python
    assert digests[:32] == digests[3 * 32 : 4 * 32] == hashlib.sha256(b"447700900123").digest()
    assert sample == [(4, 1)]


@pytest.mark.parametrize("engine", ["native", "python"])
def test_national_phone_numbers_are_counted_line_by_line_as_the_reference_says(
    engine: str,
) -> None:
    """Without a default country, a phone line refused only for being a national number is
    counted (the hint to pass --default-country): a single leading 0, no + before it, no 00."""
    lines = [
        b"07700 900123",
        b"0",
        b"x0123",
        b" (0) 20 7946 0958",
        b"0-0",
        b"00",
        b"0044 7700 900123",
        b"+0 123 4567",
        b"+44 07700 900123",
        b"12 0345",
        b"0\r",
        b"\t07 abc",
        b"007",
        b"",
        b"0a",
        b"0+1",
        b"44 7700 900123",
    ]
    blob = b"\n".join(lines) + b"\n"
    hashed = hash_chunk(blob, id_type="phone", engine=engine)
    assert hashed.national == sum(map(is_national_phone, lines)) == 8
    values = hash_values(lines, id_type="phone", engine=engine)
    assert values.national == hashed.national


def test_counting_and_merging_a_group_go_through_the_same_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dry run's count of a merge group takes the merge's engine, and both engines agree."""
    from asyncsync.pipeline import dedupe

    assert native is not None
    size, bits = 32, 4
    raw = os.urandom(size * 3000)
    sources = []
    for i, blob in enumerate([raw[: size * 2000], raw[size * 1000 :]]):  # 1000 rows in both
        path = tmp_path / f"chunk-{i}.bin"
        counts = dedupe.spill_chunk(blob, size, bits, str(path))
        sources.append(dedupe.MergeSource(str(path), 0, tuple(counts.tolist())))
    calls: list[str] = []

    def engine(name: str) -> object:
        def pick(chosen: object = None) -> object:
            calls.append(name)
            return native if name == "native" else None

        return pick

    written: dict[str, bytes] = {}
    for name in ("native", "python"):
        monkeypatch.setattr(dedupe, "native_for", engine(name))
        out = tmp_path / f"unique-{name}.bin"
        assert dedupe.merge_group(sources, size, str(out)) == (4000, 3000)
        del calls[:]
        assert dedupe.count_group(sources, size) == (4000, 3000)
        assert calls == [name]
        written[name] = out.read_bytes()
    assert written["native"] == written["python"]
    assert len(written["native"]) == 3000 * size
