"""The wire format of the TikTok Business API audience endpoints.

Paths, request payload builders (which validate their input before anything is sent), the
``{code, message, data, request_id}`` envelope, TikTok's error-code table mapped onto the classes
of :mod:`asyncsync.errors`, and the typed results parsed out of ``data``. No I/O happens here.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import SplitResult

from asyncsync.errors import AuthError, TikTokError, UsageError
from asyncsync.rules.limits import (
    API_VERSION_PREFIX,
    FILE_SUFFIXES,
    MAX_AUDIENCE_NAME_CHARS,
    MAX_DELETE_IDS_PER_CALL,
    MAX_FILE_PATHS_PER_CALL,
    MAX_LIST_PAGE_SIZE,
    MAX_RETENTION_DAYS,
    MIN_RETENTION_DAYS,
    Action,
    AudienceSubType,
    CalculateType,
    canonical_calculate_type,
)
from asyncsync.tiktok.codes import rule_for_code, rule_for_http_status

__all__ = [
    "ACCESS_TOKEN",
    "CREATE",
    "DELETE",
    "GET",
    "LIST",
    "MAX_GET_IDS_PER_CALL",
    "REVOKE_TOKEN",
    "UPDATE",
    "UPLOAD",
    "AccessToken",
    "Audience",
    "AudienceHistory",
    "Envelope",
    "MalformedAnswer",
    "NotJson",
    "Page",
    "UploadedFile",
    "batched",
    "create_payload",
    "decode_envelope",
    "delete_payload",
    "error_for_code",
    "error_for_http_status",
    "get_params",
    "list_params",
    "parse_access_token",
    "parse_audience",
    "parse_audiences",
    "parse_page",
    "require_id",
    "require_ids",
    "require_str",
    "update_payload",
    "url_for",
    "validate_action",
    "validate_calculate_type",
    "validate_file_paths",
    "validate_name",
    "validate_upload_filename",
]

UPLOAD: Final = "dmp/custom_audience/file/upload"
CREATE: Final = "dmp/custom_audience/create"
UPDATE: Final = "dmp/custom_audience/update"
DELETE: Final = "dmp/custom_audience/delete"
GET: Final = "dmp/custom_audience/get"
LIST: Final = "dmp/custom_audience/list"
ACCESS_TOKEN: Final = "oauth2/access_token"
REVOKE_TOKEN: Final = "oauth2/revoke_token"

MAX_GET_IDS_PER_CALL: Final = 100


LOOPBACK_HOSTS: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def check_api_base(url: str, *, name: str = "api_base", allow_plain_http: bool = False) -> str:
    """``url`` without its trailing slash, when it is a safe API base.

    ``https://`` is taken as is (TLS verification is always on); ``http://`` only when the host is
    loopback (a local sandbox), since the access token travels in a header, unless
    ``allow_plain_http``. ``name`` is how errors call the value. Raises ``UsageError``.
    """
    import ipaddress
    from urllib.parse import urlsplit

    if not isinstance(url, str):
        raise UsageError(f"{name} must be a URL string")
    # Errors show the scheme and host only: the rest of a bad URL may hold a secret.
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        secret = bool(parts.username or parts.password or parts.query or parts.fragment)
        if not secret:
            parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"{name} is not a URL (scheme://host[:port][/path])") from None
    if secret:
        raise UsageError(f"{name} must not hold credentials, a query or a fragment")
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"{name} {_shown(parts)!r} must be an https:// URL")
    if parts.scheme == "http" and not allow_plain_http:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host.lower() in LOOPBACK_HOSTS
        if not loopback:
            raise UsageError(
                f"{name} {_shown(parts)!r} uses plain http on a non-loopback host; use https:// "
                "(plain http is allowed only for a local sandbox on 127.0.0.1 or ::1)"
            )
    return url.strip().rstrip("/")


def _shown(parts: SplitResult) -> str:
    """The scheme, host and port of a URL (what an error may show of it)."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def url_for(api_base: str, path: str) -> str:
    """``{api_base}/open_api/v1.3/{path}/``: TikTok's paths end with a slash, and it matters."""
    return f"{api_base.rstrip('/')}{API_VERSION_PREFIX}/{path.strip('/')}/"


# --------------------------------------------------------------------------- the envelope


class MalformedAnswer(Exception):
    """The answer is not the envelope (or the ``data``) TikTok documents; says which part."""


class NotJson(MalformedAnswer):
    """The body is not JSON at all (an HTML error page of a proxy, a truncated answer)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """TikTok's answer: ``code`` 0 is success, whatever the HTTP status said."""

    code: int
    message: str
    data: Any
    request_id: str


def decode_envelope(body: bytes) -> Envelope:
    """Parse the JSON envelope; raises :class:`MalformedAnswer` naming what is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJson(f"the body is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MalformedAnswer(f"the body is JSON {type(doc).__name__}, not an object")
    if "code" not in doc:
        raise MalformedAnswer("the envelope has no 'code'")
    code = _as_int(doc["code"])
    if code is None:
        raise MalformedAnswer(f"the envelope's 'code' is not an integer: {doc['code']!r:.60}")
    message = doc.get("message")
    request_id = doc.get("request_id")
    return Envelope(
        code=code,
        message=message if isinstance(message, str) else "" if message is None else str(message),
        data=doc.get("data"),
        request_id=str(request_id) if isinstance(request_id, str | int) else "",
    )


# --------------------------------------------------------------------------- the code table

_AUTH_HINT = "the access token or app credentials were refused; retrying cannot help"


def error_for_code(
    code: int, message: str, request_id: str = "", *, endpoint: str = ""
) -> TikTokError:
    """The error for a TikTok ``code != 0``, per the table of :mod:`asyncsync.tiktok.codes`.

    40002 is always a :class:`BadRequestError` here: whether a 40002 on update means "busy" or
    "daily limit" is decided by the client from the audience's state, not from the code.
    """
    rule = rule_for_code(code)
    if rule.error is AuthError:
        message = f"{message} ({_AUTH_HINT})" if message else _AUTH_HINT
    return rule.error(code, message, request_id, endpoint=endpoint)


def error_for_http_status(status: int, detail: str, *, endpoint: str = "") -> TikTokError:
    """The error for an HTTP error status whose body is not TikTok's envelope (``code`` is
    the HTTP status), per :func:`asyncsync.tiktok.codes.rule_for_http_status`."""
    rule = rule_for_http_status(status)
    return rule.error(status, f"HTTP {status}: {detail}", "", endpoint=endpoint)


# --------------------------------------------------------------------------- request payloads


def require_id(value: object, field_name: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{field_name} must be a non-empty string, got {value!r:.60}")
    return value.strip()


def require_ids(values: Sequence[str], field_name: str) -> list[str]:
    if isinstance(values, str | bytes):
        raise UsageError(f"{field_name} must be a list of strings, not one string")
    ids = [require_id(v, field_name) for v in values]
    if not ids:
        raise UsageError(f"{field_name} must not be empty")
    return list(dict.fromkeys(ids))


def validate_name(name: object, field_name: str = "custom_audience_name") -> str:
    """1..128 characters, none of them a control character."""
    if not isinstance(name, str):
        raise UsageError(f"{field_name} must be a string, got {type(name).__name__}")
    if not 1 <= len(name) <= MAX_AUDIENCE_NAME_CHARS:
        raise UsageError(
            f"{field_name} must be 1 to {MAX_AUDIENCE_NAME_CHARS} characters, got {len(name)}"
        )
    for position, char in enumerate(name, 1):
        if unicodedata.category(char) == "Cc":
            raise UsageError(
                f"{field_name} must not contain control characters "
                f"(found {char!r} at position {position})"
            )
    return name


def validate_file_paths(file_paths: Sequence[str], field_name: str = "file_paths") -> list[str]:
    """1..500 non-empty file_path strings, in order, duplicates kept out."""
    paths = require_ids(file_paths, field_name)
    if len(paths) > MAX_FILE_PATHS_PER_CALL:
        raise UsageError(
            f"{field_name} holds {len(paths)} paths; at most {MAX_FILE_PATHS_PER_CALL} per call"
        )
    return paths


def validate_calculate_type(value: object, *, upload: bool = False) -> CalculateType:
    """A known ``calculate_type``; outside uploads the ``MAID_*`` aliases become ``FIRST_*``."""
    try:
        ct = CalculateType(str(value))
    except ValueError:
        known = ", ".join(c.value for c in CalculateType)
        raise UsageError(f"calculate_type {value!r:.60} is not one of {known}") from None
    return ct if upload else canonical_calculate_type(ct)


def validate_action(value: object) -> Action:
    try:
        return Action(str(value).upper())
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise UsageError(f"action {value!r:.60} is not one of {known}") from None


def validate_upload_filename(name: str) -> str:
    # TikTok: "The file suffixes should be exactly .csv or .txt" (docs/tiktok-api.md).
    if not name.endswith(FILE_SUFFIXES):
        raise UsageError(
            f"file {name!r}: TikTok only takes files whose name ends exactly with "
            + " or ".join(FILE_SUFFIXES)
            + " (lowercase)"
        )
    return name


def create_payload(
    advertiser_id: str,
    name: str,
    file_paths: Sequence[str],
    calculate_type: str,
    *,
    audience_sub_type: str | None = None,
    retention_in_days: int | None = None,
) -> dict[str, Any]:
    """The JSON body of ``/dmp/custom_audience/create/``; raises UsageError naming the field."""
    payload: dict[str, Any] = {
        "advertiser_id": require_id(advertiser_id, "advertiser_id"),
        "custom_audience_name": validate_name(name),
        "file_paths": validate_file_paths(file_paths),
        "calculate_type": validate_calculate_type(calculate_type).value,
    }
    if audience_sub_type is not None:
        try:
            payload["audience_sub_type"] = AudienceSubType(str(audience_sub_type).upper()).value
        except ValueError:
            known = ", ".join(s.value for s in AudienceSubType)
            raise UsageError(
                f"audience_sub_type {audience_sub_type!r:.60} is not one of {known}"
            ) from None
    if retention_in_days is not None:
        if (
            isinstance(retention_in_days, bool)
            or not isinstance(retention_in_days, int)
            or not MIN_RETENTION_DAYS <= retention_in_days <= MAX_RETENTION_DAYS
        ):
            raise UsageError(
                f"retention_in_days must be an integer from {MIN_RETENTION_DAYS} to "
                f"{MAX_RETENTION_DAYS}, got {retention_in_days!r}"
            )
        payload["retention_in_days"] = retention_in_days
    return payload


def update_payload(
    advertiser_id: str,
    audience_id: str,
    *,
    name: str | None = None,
    file_paths: Sequence[str] | None = None,
    action: Action | str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``/dmp/custom_audience/update/``.

    ``file_paths`` require an explicit ``action``: the API's own default is REPLACE, too
    destructive to be implied. Raises UsageError naming the field.
    """
    payload: dict[str, Any] = {
        "advertiser_id": require_id(advertiser_id, "advertiser_id"),
        "custom_audience_id": require_id(audience_id, "custom_audience_id"),
    }
    if name is None and file_paths is None:
        raise UsageError("update needs custom_audience_name and/or file_paths")
    if name is not None:
        payload["custom_audience_name"] = validate_name(name)
    if file_paths is not None:
        if action is None:
            raise UsageError(
                "action is required with file_paths (APPEND, REMOVE or REPLACE): "
                "the API would otherwise REPLACE the audience"
            )
        payload["file_paths"] = validate_file_paths(file_paths)
        payload["action"] = validate_action(action).value
    elif action is not None:
        raise UsageError("action is only meaningful with file_paths")
    return payload


def delete_payload(advertiser_id: str, audience_ids: Sequence[str]) -> dict[str, Any]:
    """The JSON body of one ``/dmp/custom_audience/delete/`` call (1..100 ids)."""
    ids = require_ids(audience_ids, "custom_audience_ids")
    if len(ids) > MAX_DELETE_IDS_PER_CALL:
        raise UsageError(
            f"custom_audience_ids holds {len(ids)} ids; at most {MAX_DELETE_IDS_PER_CALL} per call"
        )
    return {"advertiser_id": require_id(advertiser_id, "advertiser_id"), "custom_audience_ids": ids}


def get_params(
    advertiser_id: str, audience_ids: Sequence[str], *, history_size: int | None = None
) -> dict[str, str]:
    """The query of ``/dmp/custom_audience/get/``: arrays travel as JSON strings."""
    ids = require_ids(audience_ids, "custom_audience_ids")
    params = {
        "advertiser_id": require_id(advertiser_id, "advertiser_id"),
        "custom_audience_ids": json.dumps(ids),
    }
    if history_size is not None:
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 1:
            raise UsageError(f"history_size must be a positive integer, got {history_size!r}")
        params["history_size"] = str(history_size)
    return params


def list_params(advertiser_id: str, page: int, page_size: int) -> dict[str, str]:
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise UsageError(f"page_size must be an integer, got {page_size!r}")
    if not 1 <= page_size <= MAX_LIST_PAGE_SIZE:
        raise UsageError(f"page_size must be 1 to {MAX_LIST_PAGE_SIZE}, got {page_size}")
    return {
        "advertiser_id": require_id(advertiser_id, "advertiser_id"),
        "page": str(page),
        "page_size": str(page_size),
    }


def batched(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --------------------------------------------------------------------------- typed results


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A customer file TikTok accepted: ``file_path`` is what create/update take."""

    file_path: str
    md5: str
    bytes: int


@dataclass(frozen=True, slots=True)
class AccessToken:
    """The answer of the OAuth code exchange (the token itself is kept out of ``repr``)."""

    access_token: str = field(repr=False)
    advertiser_ids: tuple[str, ...]
    scope: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AudienceHistory:
    """One entry of an audience's operation history (``audience_history[]``)."""

    action: str
    msg: str
    opt_time: str | int | None


@dataclass(frozen=True, slots=True)
class Audience:
    """A custom audience as ``get`` or ``list`` describe it; ``raw`` holds every field sent."""

    audience_id: str
    name: str
    calculate_type: str | None
    cover_num: int | None
    is_valid: bool | None
    is_expiring: bool | None
    expired_time: str | int | None
    create_time: str | int | None
    history: tuple[AudienceHistory, ...] = ()
    owner_id: str | None = None
    msg: str | None = None
    """TikTok's status text for the audience (documented, free text)."""
    error_msg: str | None = None
    """Why the audience's last calculation failed, when it did."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ``list``: its audiences and whether another page follows."""

    audiences: list[Audience]
    page: int
    total_page: int | None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedAnswer(f"{where} is {type(value).__name__}, not an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedAnswer(f"{where} is {type(value).__name__}, not a list")
    return value


def require_str(data: object, key: str, where: str = "data") -> str:
    """``data[key]`` as a non-empty string (TikTok IDs are strings; integers are accepted)."""
    value = _obj(data, where).get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise MalformedAnswer(f"{where}.{key} is missing or not a string: {value!r:.60}")
    return value


def _opt_int(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    number = _as_int(value)
    if number is None:
        raise MalformedAnswer(f"{where}.{key} is not an integer: {value!r:.60}")
    return number


def _opt_bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise MalformedAnswer(f"{where}.{key} is not a boolean: {value!r:.60}")


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise MalformedAnswer(f"{where}.{key} is not a string: {value!r:.60}")


def _opt_id(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MalformedAnswer(f"{where}.{key} is not an ID: {value!r:.60}")


def _opt_time(obj: Mapping[str, Any], key: str, where: str) -> str | int | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise MalformedAnswer(f"{where}.{key} is not a time: {value!r:.60}")


def parse_audience(item: object, where: str = "data.list[]") -> Audience:
    """An audience from ``get`` (``audience_details`` + ``audience_history``) or ``list`` (flat)."""
    obj = _obj(item, where)
    if "audience_details" in obj:
        details_where = f"{where}.audience_details"
        details = _obj(obj["audience_details"], details_where)
        history_items = _list(obj.get("audience_history"), f"{where}.audience_history")
    else:
        details_where = where
        details = obj
        history_items = []
    history = tuple(
        AudienceHistory(
            action=_opt_str(h, "action", hw) or "",
            msg=_opt_str(h, "msg", hw) or "",
            opt_time=_opt_time(h, "opt_time", hw),
        )
        for h, hw in (
            (_obj(h, f"{where}.audience_history[]"), f"{where}.audience_history[]")
            for h in history_items
        )
    )
    return Audience(
        audience_id=require_str(details, "audience_id", details_where),
        name=_opt_str(details, "name", details_where) or "",
        calculate_type=_opt_str(details, "calculate_type", details_where),
        cover_num=_opt_int(details, "cover_num", details_where),
        is_valid=_opt_bool(details, "is_valid", details_where),
        is_expiring=_opt_bool(details, "is_expiring", details_where),
        expired_time=_opt_time(details, "expired_time", details_where),
        create_time=_opt_time(details, "create_time", details_where),
        history=history,
        owner_id=_opt_id(details, "owner_id", details_where),
        msg=_opt_str(details, "msg", details_where),
        error_msg=_opt_str(details, "error_msg", details_where),
        raw=dict(obj),
    )


def parse_audiences(data: object) -> list[Audience]:
    """``data.list`` of ``get``."""
    items = _list(_obj(data, "data").get("list"), "data.list")
    return [parse_audience(item) for item in items]


def parse_page(data: object, page: int) -> Page:
    """``data.list`` and ``data.page_info`` of ``list``."""
    obj = _obj(data, "data")
    audiences = [parse_audience(item) for item in _list(obj.get("list"), "data.list")]
    info = obj.get("page_info")
    total_page = None
    if info is not None:
        total_page = _opt_int(_obj(info, "data.page_info"), "total_page", "data.page_info")
    return Page(audiences=audiences, page=page, total_page=total_page)


def parse_access_token(data: object) -> AccessToken:
    obj = _obj(data, "data")
    token = require_str(obj, "access_token")
    advertisers = tuple(str(a) for a in _list(obj.get("advertiser_ids"), "data.advertiser_ids"))
    scope: list[int] = []
    for s in _list(obj.get("scope"), "data.scope"):
        number = _as_int(s)
        if number is None:
            raise MalformedAnswer(f"data.scope holds a non-integer: {s!r:.60}")
        scope.append(number)
    return AccessToken(access_token=token, advertiser_ids=advertisers, scope=tuple(scope))
