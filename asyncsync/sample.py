"""Realistic sample exports for trying, testing and benchmarking ``prepare``.

Mobile IDs: random UUIDs, about half upper-case (IDFA style) and half lower-case (GAID style),
some mixed case; about 3 % of lines repeat an earlier ID of the same block (a third of those in
another case); about 0.3 % malformed lines (truncated, a non-hex character, no dashes, text),
0.2 % blank or whitespace-only lines, 0.1 % padded with spaces (still valid) and 0.05 % the
all-zero ID. Email and phone samples carry the same kinds of noise in their own shapes.
The same ``seed`` gives the same bytes. Rows are generated a block at a time with numpy, so ten
million mobile IDs take seconds.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from asyncsync.errors import OutputError, UsageError

__all__ = ["KINDS", "write_sample"]

KINDS: Final = ("maid", "email", "phone")
_BLOCK: Final = 1 << 18
_HEX_LOWER: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_UPPER: Final = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
_DASHES: Final = (8, 13, 18, 23)
_HEX_COLS: Final = np.array([i for i in range(36) if i not in _DASHES])
_ZERO: Final = b"00000000-0000-0000-0000-000000000000"
_DOMAINS: Final = ("gmail.com", "yahoo.com", "outlook.com", "example.org", "mail.co.uk", "web.de")
_NAMES: Final = ("jane", "john", "alex", "maria", "li", "sam", "chris", "olga", "ahmed", "yuki")


def _maid_block(rng: np.random.Generator, n: int) -> bytes:
    digits = rng.integers(0, 16, size=(n, 32), dtype=np.uint8)
    upper = rng.random(n) < 0.5
    mixed = rng.random(n) < 0.02
    lut = np.where(upper[:, None], _HEX_UPPER[digits], _HEX_LOWER[digits])
    flip = mixed[:, None] & (rng.random((n, 32)) < 0.5)
    lut = np.where(flip, _HEX_UPPER[digits], lut)
    mat = np.full((n, 37), ord("-"), dtype=np.uint8)
    mat[:, _HEX_COLS] = lut
    mat[:, 36] = 10
    # Duplicates: copy an earlier row of the block, a third of them with the case flipped.
    dup = np.flatnonzero(rng.random(n) < 0.03)
    dup = dup[dup > 0]
    src = (rng.random(len(dup)) * dup).astype(np.int64)
    mat[dup] = mat[src]
    recase = dup[rng.random(len(dup)) < 0.33]
    if len(recase):
        rows = mat[recase]
        letters = rows >= ord("a")
        rows = np.where(letters, rows - 32, np.where(rows >= ord("A"), rows + 32, rows))
        rows[:, _DASHES] = ord("-")
        rows[:, 36] = 10
        mat[recase] = rows.astype(np.uint8)
    buf = mat.tobytes()
    noise = np.flatnonzero(rng.random(n) < 0.0065)
    kinds = rng.integers(0, 100, size=len(noise))
    # Splice the noisy lines in; the clean rows stay one contiguous slice between them.
    pieces: list[bytes] = []
    prev = 0
    for i, k in zip(noise.tolist(), kinds.tolist(), strict=True):
        pieces.append(buf[prev * 37 : i * 37])
        prev = i + 1
        line = buf[i * 37 : i * 37 + 36]
        if k < 8:
            pieces.append(_ZERO + b"\n")
        elif k < 23:
            pieces.append(b"  " + line + b" \n")
        elif k < 38:
            pieces.append(b"\n" if k < 33 else b"   \n")
        elif k < 55:
            pieces.append(line[: 20 + k % 15] + b"\n")
        elif k < 72:
            pieces.append(line[:10] + b"g" + line[11:] + b"\n")
        elif k < 86:
            pieces.append(line.replace(b"-", b"") + b"\n")
        else:
            pieces.append(b"not-a-device-id\n")
    pieces.append(buf[prev * 37 :])
    return b"".join(pieces)


def _email_block(rng: np.random.Generator, n: int, serial: int) -> bytes:
    out: list[bytes] = []
    name_i = rng.integers(0, len(_NAMES), size=n).tolist()
    dom_i = rng.integers(0, len(_DOMAINS), size=n).tolist()
    nums = rng.integers(0, 10_000_000, size=n).tolist()
    roll = rng.integers(0, 1000, size=n).tolist()
    for i in range(n):
        local = f"{_NAMES[name_i[i]]}.{nums[i]}"
        r = roll[i]
        if r < 30 and out:
            out.append(out[int(nums[i]) % len(out)])
            continue
        domain = _DOMAINS[dom_i[i]]
        if r < 80:
            text = f"{local.title()}+promo{serial % 7}@{domain.upper()}"
        elif r < 90:
            text = f"  {local}@{domain} "
        elif r < 93:
            text = ""
        elif r < 96:
            text = f"{local}@{domain.split('.')[0]}"
        elif r < 98:
            text = f"{local}@.com"
        elif r < 100:
            text = f"{local} at {domain}"
        else:
            text = f"{local}@{domain}"
        out.append(text.encode() + b"\n")
    return b"".join(out)


def _phone_block(rng: np.random.Generator, n: int) -> bytes:
    out: list[bytes] = []
    cc = rng.choice([1, 44, 49, 33, 374, 81, 86], size=n).tolist()
    nums = rng.integers(10**8, 10**10, size=n).tolist()
    roll = rng.integers(0, 1000, size=n).tolist()
    for i in range(n):
        r = roll[i]
        digits = f"{cc[i]}{nums[i]}"
        if r < 30 and out:
            out.append(out[nums[i] % len(out)])
            continue
        if r < 300:
            text = f"+{cc[i]} ({str(nums[i])[:3]}) {str(nums[i])[3:6]}-{str(nums[i])[6:]}"
        elif r < 400:
            text = f"00{digits}"
        elif r < 410:
            text = ""
        elif r < 430:
            text = digits[:5]
        elif r < 440:
            text = f"{digits}x12"
        else:
            text = digits
        out.append(text.encode() + b"\n")
    return b"".join(out)


def write_sample(
    path: str | os.PathLike[str],
    rows: int,
    *,
    kind: str = "maid",
    compress: bool = False,
    seed: int = 0,
) -> int:
    """Write ``rows`` lines of a sample ``kind`` export to ``path`` (gzip when ``compress``).

    Returns the bytes written (before compression). Raises ``UsageError`` for a bad kind or
    count, ``OutputError`` if ``path`` cannot be written.
    """
    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if rows < 0:
        raise UsageError(f"-n {rows}: must not be negative")
    rng = np.random.default_rng(seed)
    target = Path(path)
    written = 0
    try:
        raw: BinaryIO = open(target, "wb")
        out: BinaryIO = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) if compress else raw  # type: ignore[assignment]
        try:
            serial = 0
            for start in range(0, rows, _BLOCK):
                n = min(_BLOCK, rows - start)
                if kind == "maid":
                    data = _maid_block(rng, n)
                elif kind == "email":
                    data = _email_block(rng, n, serial)
                else:
                    data = _phone_block(rng, n)
                serial += 1
                out.write(data)
                written += len(data)
        finally:
            out.close()
            if out is not raw:
                raw.close()
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    return written
