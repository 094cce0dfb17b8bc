"""The sandbox reads an uploaded file's digests the same way whatever the file's shape: the fast
path for files of exact lines must agree line for line with the per-line rule."""

from __future__ import annotations

import binascii
import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsync.sandbox.state import parse_digests

_LINE = {n: re.compile(rb"[ \t]*([0-9a-fA-F]{%d})[ \t]*\r?" % n) for n in (32, 64)}


def _reference(data: bytes, hex_length: int) -> tuple[bytes, int]:
    """One line at a time: a line counts when it is one digest, blanks around it allowed."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        m = _LINE[hex_length].fullmatch(line)
        if m:
            out.append(binascii.unhexlify(m.group(1)))
    return b"".join(out), len(lines)


def _digest(i: int, hex_length: int) -> bytes:
    return hashlib.sha256(str(i).encode()).hexdigest()[:hex_length].encode()


def _odd_lines(hex_length: int) -> list[bytes]:
    """Lines that are not one exact digest of ``hex_length`` (some still count: the rule allows
    blanks around a digest, a CR before the newline, and either case)."""
    other = 32 if hex_length == 64 else 64
    d = [_digest(i, hex_length) for i in range(7, 14)]
    return [
        b"",
        b"not a digest",
        b" " + d[0] + b" ",
        b"\t" + d[1],
        d[2] + b"\r",
        d[3].upper(),
        d[4][:-1] + b"g",
        d[5][:-1],
        d[6] + b"0",
        _digest(14, other),
        b"\xff" * hex_length,
    ]


@settings(max_examples=150, deadline=None)
@given(
    exact=st.integers(0, 3000),
    odd=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 10)), max_size=5),
    hex_length=st.sampled_from([32, 64]),
    final_newline=st.booleans(),
)
def test_parse_agrees_with_the_per_line_rule(
    tmp_path_factory: pytest.TempPathFactory,
    exact: int,
    odd: list[tuple[int, int]],
    hex_length: int,
    final_newline: bool,
) -> None:
    lines = [_digest(i, hex_length) for i in range(exact)]
    for at, which in odd:
        lines.insert(min(at, len(lines)), _odd_lines(hex_length)[which])
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    path = tmp_path_factory.mktemp("parse") / "f.txt"
    path.write_bytes(data)
    assert parse_digests(path, hex_length) == _reference(data, hex_length)


def test_an_exact_file_over_many_blocks_yields_every_digest_in_order(tmp_path: Path) -> None:
    # 40,000 lines of 65 bytes = 2.6 MB: several 1 MiB read blocks, lines cut at block edges.
    digests = [_digest(i, 64) for i in range(40_000)]
    path = tmp_path / "part.txt"
    path.write_bytes(b"\n".join(digests) + b"\n")
    blob, lines = parse_digests(path, 64)
    assert lines == 40_000
    assert blob == binascii.unhexlify(b"".join(digests))


def test_one_bad_character_costs_only_its_own_line(tmp_path: Path) -> None:
    digests = [_digest(i, 64) for i in range(20_000)]
    broken = bytearray(digests[12_345])
    broken[10:11] = b"z"
    digests[12_345] = bytes(broken)
    path = tmp_path / "part.txt"
    path.write_bytes(b"\n".join(digests) + b"\n")
    blob, lines = parse_digests(path, 64)
    assert lines == 20_000
    assert len(blob) == 19_999 * 32
    assert binascii.unhexlify(digests[12_344]) + binascii.unhexlify(digests[12_346]) in blob
