"""TikTok's error codes and what each one says about the request: the one table of the client.

Every code of TikTok's published table (the ``NumericErrorCodes`` of the official SDK,
``business_api_client/tiktok_business/tiktok_code.py``) is listed here with the class of error it
raises and one of three outcomes:

- ``NOT_DONE``: TikTok did not carry the request out; sending it again is safe (and worth it when
  ``retry`` is true: rate limits, maintenance).
- ``MAYBE``: the request may have been carried out before the failure was reported (server-side
  timeouts and errors, write conflicts). A read or an upload is simply retried; a create or an
  update is an outcome of unknown result, settled by reading TikTok before anything is resent.
- ``FATAL``: not carried out, and the same request can never succeed (bad parameters, refused
  credentials, a file TikTok will not take). Fail at once with TikTok's code and message.

docs/tiktok-api.md explains each choice and which of them are our assumptions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from asyncsync.errors import (
    AuthError,
    BadRequestError,
    DuplicatedRequestError,
    FileExpiredError,
    RateLimitedError,
    SignatureMismatchError,
    TikTokError,
    TransientError,
)

__all__ = [
    "CODES",
    "FILE_REUPLOAD_CODES",
    "PARAM_ERROR",
    "PERMISSION_ERROR",
    "CodeRule",
    "Outcome",
    "rule_for_code",
    "rule_for_http_status",
]


class Outcome(enum.Enum):
    """What an error answer says about whether TikTok carried the request out."""

    NOT_DONE = "not carried out"
    MAYBE = "maybe carried out"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class CodeRule:
    """How the client treats one code: TikTok's ``name``, the ``error`` class raised, the
    ``outcome``, and whether the same request is worth sending again (``retry``)."""

    name: str
    error: type[TikTokError]
    outcome: Outcome
    retry: bool = False


PERMISSION_ERROR: Final = 40001
PARAM_ERROR: Final = 40002
SIGNATURE_ERROR: Final = 40900
FILE_NOT_EXIST: Final = 40905
FILE_EXPIRED: Final = 40910
FILE_REUPLOAD_CODES: Final = frozenset({FILE_NOT_EXIST, FILE_EXPIRED})
"""A file_path TikTok no longer knows: the part is uploaded again."""

_N, _M, _F = Outcome.NOT_DONE, Outcome.MAYBE, Outcome.FATAL


def _fatal(name: str, error: type[TikTokError] = BadRequestError) -> CodeRule:
    return CodeRule(name, error, _F)


def _maybe(name: str) -> CodeRule:
    return CodeRule(name, TransientError, _M, retry=True)


def _slow_down(name: str) -> CodeRule:
    return CodeRule(name, RateLimitedError, _N, retry=True)


CODES: Final[dict[int, CodeRule]] = {
    # Partly done: the request was carried out for some of its items.
    20001: CodeRule("PARTIAL_OK", TikTokError, _M),
    40000: _fatal("INVALID_PARAMS"),
    40001: _fatal("PERMISSION_ERROR"),
    40002: _fatal("PARAM_ERROR"),
    40003: _fatal("FORBIDDEN"),
    40006: _fatal("VERSION_ERROR"),
    40007: _fatal("NOT_EXIST"),
    40008: _fatal("NOT_IMPL"),
    40009: _fatal("UNSUPPORTED_IN_SANDBOX"),
    40010: _fatal("UNSUPPORTED_DOMAIN"),
    40011: _fatal("ID_LIMIT_EXCEED"),
    40012: _fatal("NO_UPDATE"),
    40013: _fatal("SANDBOX_ADV_NOT_EXIST"),
    40014: _fatal("INVALID_CLUSTER"),
    40016: _slow_down("BIZ_FC_ERROR"),
    # An earlier copy of this very request was received: it may well have been carried out.
    40050: CodeRule("DUPLICATED_REQUEST", DuplicatedRequestError, _M),
    40051: _fatal("INVALID_API_VERSION"),
    40052: _fatal("ACO_MATERIAL_EXIST"),
    40053: _fatal("VIDEO_ID_INVALID_ERROR"),
    40061: _fatal("INVALID_BATCH_SIZE"),
    40062: _fatal("PII_NOT_HASHED"),
    40063: _fatal("INVALID_PARTNER_NAME"),
    40100: _slow_down("REQUEST_TOO_FREQUENT"),
    40101: _fatal("INVALID_PARTNER", AuthError),
    40102: _fatal("ACCESS_TOKEN_EXPIRE", AuthError),
    40103: _fatal("REFRESH_TOKEN_EXPIRE", AuthError),
    40104: _fatal("EMPTY_ACCESS_TOKEN", AuthError),
    40105: _fatal("INVALID_ACCESS_TOKEN", AuthError),
    40106: _fatal("INVALID_CORE_USER", AuthError),
    40107: _fatal("INVALID_REFRESH_TOKEN", AuthError),
    40108: _fatal("INVALID_GRANT_TYPE", AuthError),
    40109: _fatal("ERROR_AES_DECIPHER", AuthError),
    40110: _fatal("AUTH_CODE_ERROR", AuthError),
    40112: _fatal("PASSWORD_ERROR", AuthError),
    40113: _fatal("APP_FORBIDDEN", AuthError),
    40114: _fatal("ADVERTISER_LOGOUT", AuthError),
    40115: _fatal("AUTH_TIMESTAMP_EXPIRE", AuthError),
    40116: _fatal("AUTH_SIG_ERROR", AuthError),
    40117: _fatal("APP_METHOD_FORBIDDEN", AuthError),
    40118: _fatal("NOT_IN_WHITELIST", AuthError),
    40119: _fatal("NOT_SAME_IDENTITY", AuthError),
    40120: _fatal("TIKTOK_USER_NOT_LOGGED_IN", AuthError),
    40121: _fatal("NOT_A_TCM_CREATOR", AuthError),
    40122: _fatal("TCM_CREATOR_INVALID_COUNTRY", AuthError),
    40124: _fatal("DEVELOPER_REJECTED", AuthError),
    40125: _fatal("DEVELOPER_NO_PERMISSION", AuthError),
    40126: _fatal("GARM_SINGLE_AUTH_FAILED", AuthError),
    40127: _fatal("GARM_DOUBLE_AUTH_FAILED", AuthError),
    40128: _fatal("GARM_SINGLE_VALIDATE_ERROR", AuthError),
    40129: _fatal("GARM_DOUBLE_VALIDATE_ERROR", AuthError),
    40130: _fatal("SCOPE_NOT_AUTHORIZED", AuthError),
    40131: _fatal("SCOPE_TT_USER_OAUTH_FAILED", AuthError),
    40132: _slow_down("REQUEST_FREQUENCY_LIMITED"),
    40200: _maybe("GENERAL_TASK_ERROR"),
    40201: CodeRule("TASK_NOT_READY", TransientError, _N, retry=True),
    40202: _maybe("WRITE_CONFLICT"),
    40300: _fatal("ADVERTISER_NOT_EXIST"),
    40301: _fatal("ADVERTISER_ROLE_ERROR"),
    40302: _fatal("CUSTOMER_ADVERTISER_NOT_EXIST"),
    40309: _fatal("REQUIRE_LOGIN", AuthError),
    40400: _fatal("ROUTE_NOT_FOUND"),
    40502: _fatal("AD_NUMBER_LIMIT"),
    40700: _fatal("RPC_VALIDATION_ERROR"),
    40900: CodeRule("SIGNATURE_ERROR", SignatureMismatchError, _N),
    40901: _fatal("VIDEO_TRANSCODING"),
    40902: _fatal("URL_FETCH_TIMEOUT"),
    40903: _fatal("URL_UNAVAILABLE"),
    40904: _fatal("IMAGE_ILLEGAL_CONTENT"),
    40905: CodeRule("FILE_NOT_EXIST", FileExpiredError, _N),
    40906: _fatal("FILE_EMPTY"),
    40907: _fatal("FILE_TOO_LARGE"),
    40908: _fatal("FILE_TYPE_ERROR"),
    40909: _fatal("FILE_CALCULATE_TYPE_ERROR"),
    40910: CodeRule("FILE_EXPIRED", FileExpiredError, _N),
    40911: _fatal("DUPLICATED_MATERIAL_NAME"),
    40912: _fatal("IMAGE_UNAVAILABLE"),
    40913: _fatal("IMAGE_FETCH_TIMEOUT"),
    40914: _fatal("URL_FETCH_ERROR"),
    40915: _fatal("FILE_UPLOAD_INVALID"),
    40916: _fatal("VIDEO_ILLEGAL_CONTENT"),
    41000: _fatal("BLOCKED"),
    41001: _fatal("INTERFACE_OFFLINE"),
    41002: _fatal("FIELDS_OFFLINE"),
    41013: _fatal("SITE_TO_VIDEO_SERVICE_ERROR"),
    50000: _maybe("SYS_ERROR"),
    50002: _maybe("SYS_TIMEOUT"),
    # Maintenance refuses requests before handling them.
    60001: CodeRule("MAINTENANCE", TransientError, _N, retry=True),
    61000: _slow_down("TOO_MANY_REQUESTS_BL"),
    70001: _fatal("INVALID_BIZ_AUTH_TYPE", AuthError),
}
"""Every code of TikTok's table except the 51xxx/52xxx/53xxx service errors, which
:func:`rule_for_code` answers by range (all ``MAYBE``: a backend failed somewhere inside)."""

_SERVICE_ERROR_RANGES: Final = ((51000, 51100), (52000, 52300), (53000, 53200))


def rule_for_code(code: int) -> CodeRule:
    """The rule for a TikTok ``code != 0``; codes outside the table are classed by range
    (4xxxx fatal, 5xxxx/6xxxx maybe carried out, anything else fatal)."""
    known = CODES.get(code)
    if known is not None:
        return known
    if any(lo <= code < hi for lo, hi in _SERVICE_ERROR_RANGES):
        return _maybe("SERVICE_ERROR")
    if 40000 <= code < 50000:
        return _fatal("UNKNOWN_CLIENT_ERROR")
    if 50000 <= code < 70000:
        return _maybe("UNKNOWN_SERVER_ERROR")
    return CodeRule("UNKNOWN", TikTokError, _F)


def rule_for_http_status(status: int) -> CodeRule:
    """The rule for an HTTP error status whose body is not TikTok's envelope.

    5xx: a gateway or TikTok's server failed, possibly after the request was handled (maybe);
    429: slow down (not done); 401/403: credentials refused; other 4xx: refused (fatal).
    """
    if status >= 500:
        return _maybe(f"HTTP_{status}")
    if status == 429:
        return _slow_down("HTTP_429")
    if status in (401, 403):
        return _fatal(f"HTTP_{status}", AuthError)
    return _fatal(f"HTTP_{status}")
