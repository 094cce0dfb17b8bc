"""TikTok's rules as the sandbox enforces them, stated here on their own.

The sandbox is an oracle for the client: it must not take its limits from the client's own table
(``asyncsync.rules.limits``), or a misread limit would pass every test. Each value below names
where TikTok publishes it; a test checks that the client's table agrees. docs/tiktok-api.md holds
the same rules with their sources, and says which values are our assumptions.

Sources, shortened below:

- [ref]: TikTok API for Business reference of the custom-audience endpoints
  (``/dmp/custom_audience/file/upload/``, ``create/``, ``update/``, ``delete/``, ``get/``,
  ``list/``) and of ``/oauth2/access_token/``.
- [sdk]: the official SDK's code table, ``business_api_client/tiktok_business/tiktok_code.py``
  of the ``tiktok-business-api-sdk-official`` package.
"""

from __future__ import annotations

from typing import Final

API_PREFIX: Final = "/open_api/v1.3"
"""[ref] Every endpoint lives under ``https://business-api.tiktok.com/open_api/v1.3/``."""

MAX_UPLOAD_BYTES: Final = 250_000_000
"""[ref] upload: "Size: Up to 250MB (this is the size limit for the endpoint)"."""
UPLOAD_SUFFIXES: Final = (".csv", ".txt")
"""[ref] upload: "The file suffixes should be exactly .csv or .txt" (so ``.CSV`` is refused)."""
PATHS_PER_CALL: Final = 500
"""[ref] create/update: ``file_paths`` holds at most 500 paths."""
AUDIENCES_PER_ADVERTISER: Final = 400
"""[ref] create: at most 400 custom audiences per advertiser."""
NAME_MAX_CHARS: Final = 128
"""[ref] create: ``custom_audience_name`` is at most 128 characters."""
RETENTION_DAYS: Final = (1, 365)
"""[ref] create: ``retention_in_days`` from 1 to 365."""
DAILY_OPERATIONS: Final = 24
"""[ref] update: "a daily quota of 24 Audience update operations (APPEND, REMOVE, REPLACE)"."""
DAILY_REPLACES: Final = 1
"""[ref] update: "Only one file-based audience REPLACE operation is allowed per day"."""
MIN_MEMBERS: Final = 1000
"""[ref] update: operations "will fail if the audience size is less than 1,000 after"."""
DELETE_IDS_PER_CALL: Final = 100
"""[ref] delete: ``custom_audience_ids`` holds 1 to 100 IDs."""
GET_IDS_PER_CALL: Final = 100
"""[ref] get: ``custom_audience_ids`` holds 1 to 100 IDs."""
LIST_PAGE_SIZE_MAX: Final = 100
"""[ref] list: ``page_size`` at most 100."""
AUTH_CODE_TTL_SECONDS: Final = 3600
"""[ref] oauth2: an auth_code is valid for one hour, and only once."""
EXPIRING_WINDOW_DAYS: Final = 60
"""[ref] get: ``is_expiring`` is true when the audience expires within 60 days."""

ACTIONS: Final = ("APPEND", "REMOVE", "REPLACE")
"""[ref] update ``action``; TikTok's default when it is left out is REPLACE."""
DEFAULT_ACTION: Final = "REPLACE"
SUB_TYPES: Final = ("NORMAL", "REACH_FREQUENCY")
"""[ref] create ``audience_sub_type``."""
CALCULATE_TYPES: Final = (
    "FIRST_SHA256",
    "FIRST_MD5",
    "IDFA_SHA256",
    "IDFA_MD5",
    "GAID_SHA256",
    "GAID_MD5",
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "MULTIPLE_TYPES",
)
"""[ref] ``calculate_type`` of create (and of upload)."""
UPLOAD_ONLY_TYPES: Final = {"MAID_SHA256": "FIRST_SHA256", "MAID_MD5": "FIRST_MD5"}
"""[ref] upload also takes ``MAID_SHA256``/``MAID_MD5``, the same as ``FIRST_*``; create does
not."""


def digest_hex_chars(calculate_type: str) -> int:
    """Hex characters of one digest in a file of this type: MD5 32, every other type 64."""
    return 32 if calculate_type.endswith("_MD5") else 64


def canonical_type(calculate_type: str) -> str:
    """The create-side type of an upload type (``MAID_*`` folded to ``FIRST_*``)."""
    return UPLOAD_ONLY_TYPES.get(calculate_type, calculate_type)


# [sdk] The codes the sandbox answers with (``NumericErrorCodes``).
PERMISSION_ERROR: Final = 40001
"""The advertiser is not among those the token was granted for."""
PARAM_ERROR: Final = 40002
"""Any other invalid parameter (the message names the field); also the update refusals TikTok
documents without a code of their own (busy audience, daily quotas, 1,000-member floor)."""
REQUEST_TOO_FREQUENT: Final = 40100
INVALID_PARTNER: Final = 40101
"""app_id/secret refused."""
EMPTY_ACCESS_TOKEN: Final = 40104
INVALID_ACCESS_TOKEN: Final = 40105
AUTH_CODE_ERROR: Final = 40110
"""An auth_code that is unknown, already used or expired."""
SIGNATURE_ERROR: Final = 40900
FILE_NOT_EXIST: Final = 40905
FILE_EMPTY: Final = 40906
FILE_TOO_LARGE: Final = 40907
FILE_TYPE_ERROR: Final = 40908
FILE_CALCULATE_TYPE_ERROR: Final = 40909
FILE_EXPIRED: Final = 40910
SYS_TIMEOUT: Final = 50002
INTERNAL_TIME_OUT: Final = 51010
