"""Normalization and validation of one ID, the rules of DESIGN.md section 5.

These per-line functions are the reference (the oracle the fast chunk hasher is tested against).
They take the raw bytes of one line without its line end and return either the normalized ID
as bytes or a rejection reason.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Final

from asyncsync.rules.limits import HashAlgo, IdType

__all__ = [
    "Reject",
    "hash_id",
    "normalize",
    "normalize_email",
    "normalize_hashed",
    "normalize_maid",
    "normalize_phone",
]

_WS: Final = b" \t\r\n\x0b\x0c"
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_UUID_DASHES: Final = (8, 13, 18, 23)
_ZERO_MAID: Final = b"00000000-0000-0000-0000-000000000000"
_PHONE_SYMBOLS: Final = frozenset(b" +-().")
_DIGITS: Final = frozenset(b"0123456789")


class Reject(StrEnum):
    """Why a line was not used. ``duplicate`` is counted by dedupe, not by normalize."""

    EMPTY = "empty"
    MALFORMED = "malformed"
    ZERO_ID = "zero_id"
    DUPLICATE = "duplicate"


def normalize_maid(raw: bytes) -> bytes | Reject:
    """IDFA/GAID: trimmed, 8-4-4-4-12 hex, lowercased, hyphens kept; all-zero ID dropped."""
    s = raw.strip(_WS)
    if not s:
        return Reject.EMPTY
    if len(s) != 36:
        return Reject.MALFORMED
    for i, c in enumerate(s):
        if i in _UUID_DASHES:
            if c != 0x2D:
                return Reject.MALFORMED
        elif c not in _HEX:
            return Reject.MALFORMED
    s = s.lower()
    if s == _ZERO_MAID:
        return Reject.ZERO_ID
    return s


def normalize_email(raw: bytes) -> bytes | Reject:
    """Email: trimmed, every space removed, lowercased, ``+tag`` removed from the local part;
    must look like an address.

    One ``@``, a non-empty local part (after removing the tag), a dotted domain whose labels are
    all non-empty, no other whitespace or control characters anywhere, valid UTF-8.
    """
    s = raw.strip(_WS)
    if not s:
        return Reject.EMPTY
    try:
        text = s.decode("utf-8").replace(" ", "")
    except UnicodeDecodeError:
        return Reject.MALFORMED
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return Reject.MALFORMED
    if text.count("@") != 1:
        return Reject.MALFORMED
    local, domain = text.lower().split("@")
    local = local.split("+", 1)[0]
    if not local or "." not in domain:
        return Reject.MALFORMED
    if any(not label for label in domain.split(".")):
        return Reject.MALFORMED
    return f"{local}@{domain}".encode()


def normalize_phone(raw: bytes) -> bytes | Reject:
    """Phone: digits only with the country code, no ``+``; 7 to 15 digits.

    Spaces, ``+``, ``-``, ``(``, ``)`` and ``.`` are dropped; any other character is malformed.
    A ``+`` before the first digit or a leading ``00`` (dropped) marks an international number;
    a single leading ``0`` a national one, which lacks the country code: malformed. Bare digits
    already carry the country code.
    """
    s = raw.strip(_WS)
    if not s:
        return Reject.EMPTY
    digits = bytearray()
    plus = False
    for c in s:
        if c in _DIGITS:
            digits.append(c)
        elif c not in _PHONE_SYMBOLS:
            return Reject.MALFORMED
        elif c == 0x2B and not digits:
            plus = True
    if not plus and digits.startswith(b"00"):
        del digits[:2]
    elif not plus and digits.startswith(b"0"):
        return Reject.MALFORMED
    if digits.startswith(b"0") or not 7 <= len(digits) <= 15:
        return Reject.MALFORMED
    return bytes(digits)


def normalize_hashed(raw: bytes, hex_len: int) -> bytes | Reject:
    """An already hashed ID: ``hex_len`` hex characters, lowercased (64 sha256, 32 md5)."""
    s = raw.strip(_WS)
    if not s:
        return Reject.EMPTY
    if len(s) != hex_len or any(c not in _HEX for c in s):
        return Reject.MALFORMED
    return s.lower()


def normalize(raw: bytes, id_type: IdType | str) -> bytes | Reject:
    """Normalize one line (without its line end) as ``id_type``; ``auto`` means mobile IDs."""
    kind = IdType(id_type)
    if kind in (IdType.AUTO, IdType.MAID):
        return normalize_maid(raw)
    if kind is IdType.EMAIL:
        return normalize_email(raw)
    if kind is IdType.PHONE:
        return normalize_phone(raw)
    return normalize_hashed(raw, 64 if kind is IdType.SHA256 else 32)


def hash_id(normalized: bytes, id_type: IdType | str, hash_algo: HashAlgo | str) -> bytes:
    """The lowercase hex digest written to a part file for one normalized ID.

    Already hashed input (``sha256``/``md5`` id types) is passed through unchanged.
    """
    kind = IdType(id_type)
    if kind in (IdType.SHA256, IdType.MD5):
        return normalized
    if HashAlgo(hash_algo) is HashAlgo.MD5:
        return hashlib.md5(normalized).hexdigest().encode()
    return hashlib.sha256(normalized).hexdigest().encode()
