"""The fast chunk hasher gives exactly what the per-line oracle gives, line for line."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncsync.rules.engine import native_module
from asyncsync.rules.hashing import REASONS, hash_arrow, hash_chunk, hash_values
from asyncsync.rules.ids import Reject, hash_id, normalize

KINDS = ["auto", "maid", "email", "phone", "sha256", "md5"]
ALGOS = {"email": ["sha256"], "phone": ["sha256"], "sha256": ["sha256"], "md5": ["md5"]}


def oracle(lines: list[bytes], kind: str, algo: str) -> tuple[list[bytes], tuple[int, ...]]:
    out: list[bytes] = []
    counts = dict.fromkeys(REASONS, 0)
    for line in lines:
        result = normalize(line, kind)
        if isinstance(result, Reject):
            counts[result] += 1
        else:
            out.append(hash_id(result, kind, algo))
    return out, tuple(counts[r] for r in REASONS)


def split_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def maid_like(draw: st.DrawFn) -> bytes:
    base = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    text = "".join(c.upper() if draw(st.booleans()) else c for c in base)
    mutation = draw(st.sampled_from(["none", "none", "pad", "char", "cut", "zero", "crlf", "dash"]))
    if mutation == "pad":
        text = draw(st.sampled_from([" ", "\t", "  ", "\x0b"])) + text + " "
    elif mutation == "char":
        i = draw(st.integers(0, 35))
        bad = draw(st.sampled_from(["g", "G", " ", "-", "\x00", "é", "Z"]))
        text = text[:i] + bad + text[i + 1 :]
    elif mutation == "cut":
        text = text[: draw(st.integers(0, 35))]
    elif mutation == "zero":
        text = "00000000-0000-0000-0000-000000000000"
    elif mutation == "crlf":
        text += "\r"
    elif mutation == "dash":
        text = text.replace("-", "")
    return text.encode("utf-8")


@st.composite
def adversarial_line(draw: st.DrawFn, kind: str) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice < 5 and kind in ("auto", "maid"):
        return maid_like(draw)
    if choice < 5 and kind in ("sha256", "md5"):
        width = 64 if kind == "sha256" else 32
        text = draw(st.text("0123456789abcdefABCDEF", min_size=width - 1, max_size=width + 1))
        return text.encode()
    if choice < 5 and kind == "email":
        local = draw(st.text("abcXYZ.+_-1", min_size=0, max_size=8))
        domain = draw(st.sampled_from(["gmail.com", "x..com", ".com", "a.b", "COM", "a.b."]))
        at = draw(st.sampled_from(["@", "@", "@@", ""]))
        return f" {local}{at}{domain}\t".encode()
    if choice < 5 and kind == "phone":
        return draw(st.text("0123456789 +-().x", min_size=0, max_size=20)).encode()
    return draw(st.binary(max_size=40)).replace(b"\n", b"")


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_chunk_hasher_equals_per_line_oracle(kind: str, data: st.DataObject) -> None:
    algo = data.draw(st.sampled_from(ALGOS.get(kind, ["sha256", "md5"])))
    lines = data.draw(st.lists(adversarial_line(kind), max_size=60))
    ending = data.draw(st.sampled_from([b"\n", b"\r\n"]))
    blob = ending.join(lines) + (ending if data.draw(st.booleans()) else b"")
    got = hash_chunk(blob, id_type=kind, hash_algo=algo)
    expected, counts = oracle(split_lines(blob), kind, algo)
    assert got.hex_digests() == expected
    assert got.rejected == counts
    assert got.rows == len(split_lines(blob))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_value_hasher_keeps_multiline_values_as_one_row(kind: str, data: st.DataObject) -> None:
    algo = data.draw(st.sampled_from(ALGOS.get(kind, ["sha256", "md5"])))
    values = data.draw(
        st.lists(
            st.one_of(adversarial_line(kind), adversarial_line(kind).map(lambda v: b"\n" + v)),
            max_size=40,
        )
    )
    got = hash_values(values, id_type=kind, hash_algo=algo)
    expected, counts = oracle(values, kind, algo)
    assert got.hex_digests() == expected
    assert got.rejected == counts
    assert got.rows == len(values)


@pytest.mark.skipif(native_module() is None, reason="the native engine is not built")
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arrow_value_hasher_equals_per_line_oracle(kind: str, data: st.DataObject) -> None:
    """Each value of an Arrow array is one row: a null is empty, a value holding a line end is
    malformed (written as text it would be two lines)."""
    import pyarrow as pa

    algo = data.draw(st.sampled_from(ALGOS.get(kind, ["sha256", "md5"])))
    cell = st.one_of(
        adversarial_line(kind), st.none(), adversarial_line(kind).map(lambda v: v + b"\n")
    )
    values = data.draw(st.lists(cell, max_size=40))
    skip = data.draw(st.integers(0, len(values)))
    array = pa.array(values, type=pa.binary())[skip:]
    validity, offsets, raw = array.buffers()
    got = hash_arrow(
        raw,
        offsets,
        wide=False,
        first=array.offset,
        rows=len(array),
        validity=validity,
        id_type=kind,
        hash_algo=algo,
        engine="native",
    )
    lines = [b"\x00" if v and b"\n" in v else v or b"" for v in values[skip:]]
    expected, counts = oracle(lines, kind, algo)
    if got is None:  # national phone numbers to count: the caller hashes the lines
        assert kind == "phone" and counts[1] > 0
        return
    assert got.hex_digests() == expected
    assert got.rejected == counts
    assert got.rows == len(lines)


def test_hasher_handles_bulk_mobile_ids_like_the_oracle() -> None:
    ids = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(5000)]
    lines = [(s.upper() if i % 3 else s).encode() for i, s in enumerate(ids)]
    lines[10] = b""
    lines[11] = b"00000000-0000-0000-0000-000000000000"
    lines[12] = b"  " + lines[12] + b"  "
    blob = b"\r\n".join(lines)
    got = hash_chunk(blob, id_type="maid")
    expected, counts = oracle(lines, "maid", "sha256")
    assert got.hex_digests() == expected
    assert counts == (1, 0, 1)
    assert got.sample == ((10, "empty"), (11, "zero_id"))


def test_design_vectors_through_the_chunk_hasher() -> None:
    maid = hash_chunk(b"  5F3A2B18-9C4D-4E7F-B8E2-17D3A1E69B25\r\n", id_type="auto")
    assert maid.hex_digests()[0].startswith(b"83dc3f5f")
    email = hash_chunk(b"JaneDoe+news@Gmail.com\n", id_type="email")
    assert email.hex_digests()[0].startswith(b"d6117306")
    phone = hash_chunk(b"+374 93 828 222\n", id_type="phone")
    assert phone.hex_digests()[0].startswith(b"65b7e6dc")


def test_rejected_sample_is_capped_and_in_line_order() -> None:
    blob = b"\n".join([b"bad"] * 50)
    got = hash_chunk(blob, id_type="maid", sample_cap=7)
    assert got.rejected == (0, 50, 0)
    assert [i for i, _ in got.sample] == list(range(7))


@pytest.mark.parametrize("kind", KINDS)
@given(line=st.binary(max_size=50))
def test_normalize_is_idempotent_on_any_bytes(kind: str, line: bytes) -> None:
    once = normalize(line, kind)
    if not isinstance(once, Reject):
        assert normalize(once, kind) == once
