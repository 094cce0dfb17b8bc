"""TikTok's documented limits and enumerations, used by the client and the sync job.

Each value, its source (TikTok's API reference, the official SDK, the help center) and which
values are our assumptions: docs/tiktok-api.md. The sandbox states the same rules on its own
(``asyncsync.sandbox.rules``); a test checks that the two agree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

API_VERSION_PREFIX: Final = "/open_api/v1.3"
DEFAULT_API_BASE: Final = "https://business-api.tiktok.com"

MB: Final = 1_000_000
MAX_FILE_BYTES: Final = 250 * MB
"""Largest customer file the upload endpoint takes."""
DEFAULT_MAX_FILE_BYTES: Final = 50 * MB
"""Default part size: integrators report 50 MB as the practical limit."""

MAX_AUDIENCES_PER_ADVERTISER: Final = 400
MAX_FILE_PATHS_PER_CALL: Final = 500
MAX_DELETE_IDS_PER_CALL: Final = 100
MAX_AUDIENCE_NAME_CHARS: Final = 128
MIN_RETENTION_DAYS: Final = 1
MAX_RETENTION_DAYS: Final = 365
DAILY_FILE_OPERATIONS_PER_AUDIENCE: Final = 24
DAILY_REPLACES_PER_AUDIENCE: Final = 1
MIN_AUDIENCE_MEMBERS: Final = 1_000
MAX_LIST_PAGE_SIZE: Final = 100
AUTH_CODE_TTL_SECONDS: Final = 3600
FILE_SUFFIXES: Final = (".csv", ".txt")
DEFAULT_REQUESTS_PER_SECOND: Final = 10.0


class Action(StrEnum):
    """Modification type of ``/dmp/custom_audience/update/`` (the API default is REPLACE)."""

    APPEND = "APPEND"
    REMOVE = "REMOVE"
    REPLACE = "REPLACE"


class AudienceSubType(StrEnum):
    NORMAL = "NORMAL"
    REACH_FREQUENCY = "REACH_FREQUENCY"


class CalculateType(StrEnum):
    """Encryption type of a customer file (``calculate_type``)."""

    FIRST_SHA256 = "FIRST_SHA256"
    FIRST_MD5 = "FIRST_MD5"
    MAID_SHA256 = "MAID_SHA256"
    MAID_MD5 = "MAID_MD5"
    IDFA_SHA256 = "IDFA_SHA256"
    IDFA_MD5 = "IDFA_MD5"
    GAID_SHA256 = "GAID_SHA256"
    GAID_MD5 = "GAID_MD5"
    EMAIL_SHA256 = "EMAIL_SHA256"
    PHONE_SHA256 = "PHONE_SHA256"
    MULTIPLE_TYPES = "MULTIPLE_TYPES"


UPLOAD_ONLY_ALIASES: Final = {
    CalculateType.MAID_SHA256: CalculateType.FIRST_SHA256,
    CalculateType.MAID_MD5: CalculateType.FIRST_MD5,
}
"""``MAID_*`` are accepted on upload only and stand for the ``FIRST_*`` type."""


class IdType(StrEnum):
    """What the input lines hold (``--id-type``). ``AUTO`` means mobile IDs."""

    AUTO = "auto"
    MAID = "maid"
    EMAIL = "email"
    PHONE = "phone"
    SHA256 = "sha256"
    MD5 = "md5"


class HashAlgo(StrEnum):
    SHA256 = "sha256"
    MD5 = "md5"


def calculate_type(
    id_type: IdType | str, hash_algo: HashAlgo | str = HashAlgo.SHA256
) -> CalculateType:
    """The ``calculate_type`` for files of ``id_type`` IDs hashed with ``hash_algo``.

    Raises ``ValueError`` for combinations TikTok does not accept (email or phone with MD5, or
    pre-hashed input whose digest length disagrees with ``hash_algo``).
    """
    kind = IdType(id_type)
    algo = HashAlgo(hash_algo)
    if kind in (IdType.AUTO, IdType.MAID):
        return CalculateType.FIRST_SHA256 if algo is HashAlgo.SHA256 else CalculateType.FIRST_MD5
    if kind is IdType.EMAIL or kind is IdType.PHONE:
        if algo is not HashAlgo.SHA256:
            raise ValueError(f"{kind.value} IDs can only be hashed with sha256, not {algo.value}")
        return CalculateType.EMAIL_SHA256 if kind is IdType.EMAIL else CalculateType.PHONE_SHA256
    # Already hashed input: the digest length fixes the algorithm; the IDs are mobile IDs.
    expected = HashAlgo.SHA256 if kind is IdType.SHA256 else HashAlgo.MD5
    if algo is not expected:
        raise ValueError(f"--id-type {kind.value} input is already hashed with {expected.value}")
    return CalculateType.FIRST_SHA256 if kind is IdType.SHA256 else CalculateType.FIRST_MD5


def canonical_calculate_type(value: str) -> CalculateType:
    """``value`` as a CalculateType, upload-only ``MAID_*`` aliases folded to ``FIRST_*``."""
    ct = CalculateType(value)
    return UPLOAD_ONLY_ALIASES.get(ct, ct)


def digest_hex_length(ct: CalculateType | str) -> int:
    """Length of one lowercase hex digest in a file of this calculate_type (64 or 32)."""
    return 32 if str(ct).endswith("_MD5") else 64
