"""Test IDs and digests: deterministic per seed, with the digests an audience must end up
holding."""

from __future__ import annotations

import hashlib
import random
import uuid
from pathlib import Path


def sha256_digests(prefix: str, n: int) -> list[str]:
    """``n`` distinct lowercase SHA256 hex digests (deterministic per ``prefix``)."""
    return [hashlib.sha256(f"{prefix}:{i}".encode()).hexdigest() for i in range(n)]


def md5_digests(prefix: str, n: int) -> list[str]:
    return [hashlib.md5(f"{prefix}:{i}".encode()).hexdigest() for i in range(n)]


def digest_file(digests: list[str]) -> bytes:
    return ("\n".join(digests) + "\n").encode()


DIGEST_LINE = 65
"""Bytes of one SHA256 line in a part: small ``max_file_bytes`` give many parts cheaply."""


def maids(seed: int, n: int) -> list[str]:
    """``n`` random lowercase MAIDs (UUID shape), deterministic per ``seed``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        h = f"{rng.getrandbits(128):032x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def maid_digests(ids: list[str]) -> set[str]:
    """The SHA256 digests an audience holds after a sync of ``ids`` (the expected members)."""
    return {hashlib.sha256(i.lower().encode()).hexdigest() for i in ids}


def write_maids(path: Path, n: int, seed: int) -> set[str]:
    """``n`` distinct random mobile IDs, a third upper-cased, plus a duplicate and an invalid line
    every 1,000 lines; returns the SHA-256 set the audience must end up holding."""
    raw = hashlib.shake_256(f"maids:{seed}".encode()).hexdigest(16 * n)
    expected: set[str] = set()
    with path.open("w") as out:
        batch: list[str] = []
        for i in range(n):
            h = raw[32 * i : 32 * i + 32]
            maid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            expected.add(hashlib.sha256(maid.encode()).hexdigest())
            batch.append(maid.upper() if i % 3 == 0 else maid)
            if i % 1000 == 0:
                batch.append(f" {maid} ")
                batch.append("definitely-not-an-id")
            if len(batch) >= 100_000:
                out.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
    return expected


def write_messy_maids(path: Path, rows: int, seed: int) -> set[str]:
    """A messy export of mobile IDs; returns the SHA-256 set TikTok should end up holding."""
    rng = random.Random(seed)
    expected: set[str] = set()
    lines: list[str] = []
    for i in range(rows):
        maid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        expected.add(hashlib.sha256(maid.encode()).hexdigest())
        lines.append(maid.upper() if i % 3 == 0 else maid)
        if i % 50 == 0:
            lines.append(f"  {maid}  ")  # a duplicate once trimmed
        if i % 97 == 0:
            lines.append("not-an-id")
    path.write_text("\n".join(lines) + "\n")
    return expected
