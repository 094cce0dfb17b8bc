"""Normalization and validation of one ID, following TikTok's "List of supported IDs and formats
for a customer file" (docs/normalization.md).

These per-line functions are the reference (the oracle the fast chunk hasher is tested against).
They take the raw bytes of one line without its line end and return either the normalized ID
as bytes or a rejection reason.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Final

from asyncsync.rules.limits import HashAlgo, IdType

__all__ = [
    "Reject",
    "check_default_country",
    "hash_id",
    "is_national_phone",
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
_PLUS: Final = 0x2B
_DIGITS: Final = frozenset(b"0123456789")


class Reject(StrEnum):
    """Why a line was not used (a duplicate is used once: dedupe counts the others)."""

    EMPTY = "empty"
    MALFORMED = "malformed"
    ZERO_ID = "zero_id"


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
    """Email: trimmed, every space (0x20) removed, inside too, lowercased, ``+tag`` removed from
    the local part; must look like an address.

    One ``@``, a non-empty local part (after removing the tag), a dotted domain whose labels are
    all non-empty, no other whitespace or control characters anywhere, valid UTF-8.
    """
    s = raw.strip(_WS).replace(b" ", b"")
    if not s:
        return Reject.EMPTY
    try:
        text = s.decode("utf-8")
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


def normalize_phone(raw: bytes, default_country: str | None = None) -> bytes | Reject:
    """Phone: the digits with the country code, no ``+``; 7 to 15 digits, never a leading 0.

    Spaces, ``+``, ``-``, ``(``, ``)`` and ``.`` are dropped; any other character is malformed.
    A number with a ``+`` before its first digit, or whose digits begin with ``00``, is
    international (the ``00`` is dropped). Any other number is read as a number of
    ``default_country`` (an ISO 3166 alpha-2 code) when one is given, as libphonenumber parses
    with a default region (trunk prefix dropped, calling code added). Without it, a number
    beginning with a single ``0`` is a national number that lacks its country code (malformed:
    see :func:`is_national_phone`), and other bare digits are taken to start with the country
    code, as in TikTok's example.
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
        elif c == _PLUS and not digits:
            plus = True
    if plus:
        out = bytes(digits)
    elif digits.startswith(b"00"):
        out = bytes(digits[2:])
    elif default_country is not None:
        return _national_phone(bytes(digits), default_country)
    else:
        out = bytes(digits)
    if out[:1] == b"0" or not 7 <= len(out) <= 15:
        return Reject.MALFORMED
    return out


def is_national_phone(raw: bytes) -> bool:
    """Whether a line was refused only for being a national number (a single leading ``0``,
    no ``+`` before it, no ``00``): what ``--default-country`` would have read. Every such line
    is malformed without a default country, whatever else it holds."""
    return _NATIONAL.match(raw) is not None


_NATIONAL: Final = re.compile(rb"[^0-9+]*0[^0-9]*(?:[1-9]|\Z)")
"""No ``+`` before the first digit, which is ``0``, and the next digit (if any) is not ``0``."""


def _national_phone(digits: bytes, region: str) -> bytes | Reject:
    """A number without ``+``/``00`` read as a number of ``region`` (the slow path)."""
    # Imported on first use: only --default-country needs libphonenumber's metadata.
    import phonenumbers

    try:
        parsed = phonenumbers.parse(digits.decode("ascii"), region)
    except phonenumbers.NumberParseException:
        return Reject.MALFORMED
    e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    out = e164.lstrip("+").encode("ascii", "replace")
    if not out.isdigit() or out[:1] == b"0" or not 7 <= len(out) <= 15:
        return Reject.MALFORMED
    return out


def check_default_country(value: str) -> str:
    """``value`` as an upper-case ISO 3166 alpha-2 region that has a calling code; raises
    ``ValueError`` otherwise."""
    import phonenumbers

    region = value.strip().upper()
    if len(region) != 2 or not region.isalpha() or region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"{value!r} is not an ISO 3166 alpha-2 country code with a phone calling code "
            "(examples: US, GB, FR, DE)"
        )
    return region


def normalize_hashed(raw: bytes, hex_len: int) -> bytes | Reject:
    """An already hashed ID: ``hex_len`` hex characters, lowercased (64 sha256, 32 md5)."""
    s = raw.strip(_WS)
    if not s:
        return Reject.EMPTY
    if len(s) != hex_len or any(c not in _HEX for c in s):
        return Reject.MALFORMED
    return s.lower()


def normalize(
    raw: bytes, id_type: IdType | str, default_country: str | None = None
) -> bytes | Reject:
    """Normalize one line (without its line end) as ``id_type``; ``auto`` means mobile IDs.

    ``default_country`` only concerns phones (see :func:`normalize_phone`).
    """
    kind = IdType(id_type)
    if kind in (IdType.AUTO, IdType.MAID):
        return normalize_maid(raw)
    if kind is IdType.EMAIL:
        return normalize_email(raw)
    if kind is IdType.PHONE:
        return normalize_phone(raw, default_country)
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
