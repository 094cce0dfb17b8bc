"""The sandbox's model of TikTok: advertisers, tokens, uploaded files, audiences, quotas, clock.

Everything here runs on the event loop thread of the sandbox and answers synchronously; the HTTP
layer (``app.py``) turns :class:`ApiError` into TikTok's envelope. Audience operations complete
lazily: each one records when it ends on the sandbox clock, and the next look at the audience
after that moment applies it (no background task).

Codes follow TikTok's table (``asyncsync.sandbox.rules``; docs/tiktok-api.md):

- 40001 PERMISSION_ERROR: a token used on an advertiser it was not granted.
- 40002 PARAM_ERROR: any other invalid parameter (the message names the field), an unknown
  audience, and the update refusals TikTok documents without a code of their own: a busy audience,
  a used-up daily quota (the message says "quota"), the 1,000-member floor, REMOVE of everything,
  an expiring or expired audience, 400 audiences.
- 40101: app_id/secret refused; 40104: no access token; 40105: an unknown or revoked token;
  40110: an auth_code that is unknown, used or expired.
- 40905 a file_path never uploaded (or another advertiser's); 40906 an empty file; 40907 a file
  over the size limit; 40908 a name not ending exactly in ``.csv``/``.txt``; 40909 a file whose
  calculate_type differs from the audience's; 40910 a file_path past its lifetime.
"""

from __future__ import annotations

import binascii
import hashlib
import random
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from asyncsync.errors import UsageError
from asyncsync.sandbox import rules as R

__all__ = [
    "ApiError",
    "Audience",
    "SandboxClock",
    "SandboxConfig",
    "SandboxState",
    "UploadedFile",
    "parse_digests",
]

DAY: Final = 86_400.0
EXPIRING_WINDOW_SECONDS: Final = R.EXPIRING_WINDOW_DAYS * DAY
"""An audience counts as expiring this long before its expiry time."""
DEFAULT_EXPIRY_DAYS: Final = 365
"""An audience expires this long after its last file operation. TikTok publishes no lifetime
(``retention_in_days`` is how long members stay, not when the audience expires): our
assumption, docs/tiktok-api.md."""
BUSY_MESSAGE: Final = (
    "Audience is busy: another operation is still running. Retry after it completes."
)
REPLACE_RUNNING_MESSAGE: Final = (
    "Audience is busy: an unfinished REPLACE operation is still running. Retry after it completes."
)


def quota_message(limit: int) -> str:
    return f"Daily quota exceeded: at most {limit} update operations per audience per day."


REPLACE_QUOTA_MESSAGE: Final = (
    "Daily quota exceeded: only one REPLACE operation per audience per day."
)


class ApiError(Exception):
    """A TikTok error answer: HTTP 200 with ``code != 0``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def bad(message: str) -> ApiError:
    return ApiError(R.PARAM_ERROR, message)


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """How the sandbox behaves. Defaults are TikTok's documented limits.

    - ``operation_seconds``: how long each create/update "runs" on the sandbox clock (the
      audience is busy meanwhile and ``is_valid`` is false).
    - ``max_file_bytes``: largest upload accepted (TikTok: 250 MB).
    - ``min_members``: no update may leave an audience with fewer members.
    - ``daily_operations`` / ``daily_replaces``: file operations and REPLACEs per audience per UTC
      day of the sandbox clock.
    - ``max_audiences``: audiences per advertiser.
    - ``file_ttl_seconds``: how long an uploaded ``file_path`` stays usable.
    - ``auth_code_ttl``: how long an OAuth auth_code stays valid (it is single-use as well).
    - ``page_size_max``: largest ``page_size`` of list.
    - ``seed``: seeds the generator of IDs and file paths (``None``: unpredictable).
    - ``latency_seconds``: every API request is answered no sooner than this after it arrived
      (a wide-area round trip plus TikTok's own handling; 0: loopback speed).
    - ``upload_bytes_per_second``: each upload's body is read at most this fast, as one TCP
      stream over a long path is (``None``: no cap).
    - ``link_bytes_per_second``: all uploads in flight together are read at most this fast, as
      the uplink of the machine that sends them is (``None``: no cap).

    Worst-case memory: 32 bytes per digest of every live uploaded file (16 for MD5 types), plus
    about 100 bytes per member of every audience (a Python set of 32-byte strings); an upload in
    flight is spooled to disk, not held in memory.
    """

    operation_seconds: float = 2.0
    max_file_bytes: int = R.MAX_UPLOAD_BYTES
    min_members: int = R.MIN_MEMBERS
    daily_operations: int = R.DAILY_OPERATIONS
    daily_replaces: int = R.DAILY_REPLACES
    max_audiences: int = R.AUDIENCES_PER_ADVERTISER
    file_ttl_seconds: float = 7 * DAY
    auth_code_ttl: float = float(R.AUTH_CODE_TTL_SECONDS)
    page_size_max: int = R.LIST_PAGE_SIZE_MAX
    seed: int | None = None
    latency_seconds: float = 0.0
    upload_bytes_per_second: float | None = None
    link_bytes_per_second: float | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise UsageError(f"SandboxConfig.{what}")

        need(0.0 <= self.operation_seconds <= 30 * DAY, "operation_seconds must be in [0, 30 days]")
        need(1 <= self.max_file_bytes <= 10 * R.MAX_UPLOAD_BYTES, "max_file_bytes must be positive")
        need(0 <= self.min_members, "min_members must be >= 0")
        need(1 <= self.daily_operations, "daily_operations must be >= 1")
        need(0 <= self.daily_replaces <= self.daily_operations, "daily_replaces out of range")
        need(1 <= self.max_audiences, "max_audiences must be >= 1")
        need(0 < self.file_ttl_seconds, "file_ttl_seconds must be positive")
        need(0 < self.auth_code_ttl, "auth_code_ttl must be positive")
        need(1 <= self.page_size_max <= 1000, "page_size_max must be in [1, 1000]")
        need(0.0 <= self.latency_seconds <= 600.0, "latency_seconds must be in [0, 600]")
        for name in ("upload_bytes_per_second", "link_bytes_per_second"):
            rate = getattr(self, name)
            need(rate is None or rate >= 1024.0, f"{name} must be None or >= 1024")


class SandboxClock:
    """The sandbox's notion of time: real time plus an offset that tests move forward."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        """Epoch seconds on the sandbox clock."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0); returns the new ``now()``."""
        if seconds < 0:
            raise UsageError("the sandbox clock only moves forward")
        self._offset += float(seconds)
        return self.now()

    @property
    def offset(self) -> float:
        return self._offset


def format_time(epoch: float) -> str:
    """TikTok's ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


_BLOCK = 1024 * 1024
_DIGEST_RE: dict[int, re.Pattern[bytes]] = {
    n: re.compile(rb"^[ \t]*([0-9a-fA-F]{%d})[ \t]*\r?$" % n, re.MULTILINE) for n in (32, 64)
}


def _exact_lines(body: bytes, count: int, hex_length: int) -> bytes | None:
    """The digests of ``body`` when it is ``count`` lines of exactly ``hex_length`` hex digits
    each (the shape every well-made file has), else None: the regex then decides line by line.
    """
    width = hex_length + 1
    if len(body) != count * width or body[hex_length::width] != b"\n" * count:
        return None
    try:
        return binascii.unhexlify(body.replace(b"\n", b""))
    except binascii.Error:  # a non-hex character somewhere: not the fast shape
        return None


def parse_digests(path: Path, hex_length: int) -> tuple[bytes, int]:
    """Read ``path`` in blocks; return (binary digests concatenated, number of lines).

    A line is matched when it holds exactly one hex digest of ``hex_length`` characters (either
    case, surrounding blanks allowed); every other line is ignored, as TikTok ignores unmatched
    data.
    """
    pattern = _DIGEST_RE[hex_length]
    out: list[bytes] = []
    lines = 0
    tail = b""
    with path.open("rb") as f:
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            block = tail + block
            cut = block.rfind(b"\n")
            if cut < 0:
                tail = block
                continue
            tail = block[cut + 1 :]
            body = block[: cut + 1]
            count = body.count(b"\n")
            lines += count
            fast = _exact_lines(body, count, hex_length)
            if fast is not None:
                out.append(fast)
                continue
            found = pattern.findall(body)
            if found:
                out.append(binascii.unhexlify(b"".join(found)))
    if tail:
        lines += 1
        found = pattern.findall(tail)
        if found:
            out.append(binascii.unhexlify(b"".join(found)))
    return b"".join(out), lines


def iter_digests(blob: bytes, size: int) -> Iterable[bytes]:
    return (blob[i : i + size] for i in range(0, len(blob), size))


@dataclass
class UploadedFile:
    file_path: str
    advertiser_id: str
    calculate_type: str
    """Canonical type (``MAID_*`` folded to ``FIRST_*``)."""
    uploaded_calculate_type: str
    digests: bytes
    """Binary digests, concatenated (``digest_size`` bytes each)."""
    digest_size: int
    size_bytes: int
    lines: int
    md5: str
    filename: str
    expires: float

    @property
    def matched(self) -> int:
        return len(self.digests) // self.digest_size

    def members(self) -> Iterable[bytes]:
        return iter_digests(self.digests, self.digest_size)


@dataclass
class Operation:
    action: str
    """CREATE, APPEND, REMOVE or REPLACE."""
    started: float
    ends: float
    files: list[UploadedFile]
    msg: str = "Processing"
    done: bool = False
    replacement: set[bytes] | None = None
    """The new membership of a REPLACE, computed once when it was accepted."""


@dataclass
class Audience:
    audience_id: str
    advertiser_id: str
    name: str
    calculate_type: str
    sub_type: str
    retention_in_days: int | None
    create_time: float
    expires: float
    members: set[bytes] = field(default_factory=set)
    file_paths: list[str] = field(default_factory=list)
    history: list[Operation] = field(default_factory=list)
    """Oldest first."""
    day_ops: dict[int, int] = field(default_factory=dict)
    day_replaces: dict[int, int] = field(default_factory=dict)

    @property
    def running(self) -> Operation | None:
        if self.history and not self.history[-1].done:
            return self.history[-1]
        return None

    def is_expired(self, now: float) -> bool:
        return now >= self.expires

    def is_expiring(self, now: float) -> bool:
        return now >= self.expires - EXPIRING_WINDOW_SECONDS


def _utc_day(epoch: float) -> int:
    return int(epoch // DAY)


@dataclass
class TokenInfo:
    advertiser_ids: frozenset[str] | None
    app_id: str | None = None
    revoked: bool = False


@dataclass
class AuthCode:
    app_id: str
    advertiser_ids: tuple[str, ...]
    expires: float
    used: bool = False


class SandboxState:
    """TikTok's state as the sandbox sees it. Inspect it freely from tests (same thread)."""

    def __init__(self, config: SandboxConfig, clock: SandboxClock) -> None:
        self.config = config
        self.clock = clock
        self.tokens: dict[str, TokenInfo] = {}
        self.apps: dict[str, tuple[str, tuple[str, ...]]] = {}
        """app_id → (secret, advertiser IDs an authorization grants)."""
        self._rng = random.Random(config.seed)
        self.reset()

    def reset(self) -> None:
        """Forget files, audiences and auth codes; keep tokens, apps and the clock."""
        self.files: dict[str, UploadedFile] = {}
        self.expired_files: dict[str, str] = {}
        """file_path → advertiser of files past their lifetime (what 40910 answers)."""
        self.audiences: dict[str, Audience] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.uploads = 0
        self.upload_bytes = 0

    def rng_state(self) -> tuple[Any, ...]:
        """The state of the generator of IDs and file paths (for ``persist``)."""
        return self._rng.getstate()

    def set_rng_state(self, value: tuple[Any, ...]) -> None:
        self._rng.setstate(value)

    # ----------------------------------------------------------------- ids
    def new_audience_id(self) -> str:
        while True:
            candidate = str(7_000_000_000_000_000_000 + self._rng.getrandbits(61) % 10**18)
            if candidate not in self.audiences:
                return candidate

    def new_file_path(self) -> str:
        while True:
            candidate = f"{self._rng.getrandbits(64):016x}"
            if candidate not in self.files:
                return candidate

    def new_request_id(self) -> str:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(self.clock.now()))
        return f"{stamp}{self._rng.getrandbits(56):017d}"

    # ----------------------------------------------------------------- auth
    def issue_token(
        self,
        advertiser_ids: Sequence[str] | None = None,
        *,
        token: str | None = None,
        app_id: str | None = None,
    ) -> str:
        value = token if token is not None else secrets.token_hex(20)
        if not value or any(c.isspace() for c in value):
            raise UsageError("a sandbox token must be a non-empty string without spaces")
        ids = None if advertiser_ids is None else frozenset(str(a) for a in advertiser_ids)
        self.tokens[value] = TokenInfo(ids, app_id)
        return value

    def register_app(self, app_id: str, secret: str, advertiser_ids: Sequence[str]) -> None:
        if not app_id or not secret:
            raise UsageError("app_id and secret must be non-empty")
        self.apps[str(app_id)] = (str(secret), tuple(str(a) for a in advertiser_ids))

    def issue_auth_code(self, app_id: str, advertiser_ids: Sequence[str] | None = None) -> str:
        if app_id not in self.apps:
            raise ApiError(R.INVALID_PARTNER, f"app_id {app_id} is unknown")
        ids = self.apps[app_id][1] if advertiser_ids is None else tuple(advertiser_ids)
        code = secrets.token_hex(20)
        self.auth_codes[code] = AuthCode(app_id, ids, self.clock.now() + self.config.auth_code_ttl)
        return code

    def exchange_auth_code(self, app_id: str, secret: str, auth_code: str) -> dict[str, Any]:
        known = self.apps.get(app_id)
        if known is None or not secrets.compare_digest(known[0], secret):
            raise ApiError(R.INVALID_PARTNER, "app_id or secret is invalid")
        entry = self.auth_codes.get(auth_code)
        if entry is None or entry.app_id != app_id:
            raise ApiError(R.AUTH_CODE_ERROR, "auth_code is invalid")
        if entry.used:
            raise ApiError(R.AUTH_CODE_ERROR, "auth_code has already been used")
        if self.clock.now() >= entry.expires:
            raise ApiError(R.AUTH_CODE_ERROR, "auth_code has expired")
        entry.used = True
        token = self.issue_token(entry.advertiser_ids, app_id=app_id)
        return {
            "access_token": token,
            "advertiser_ids": list(entry.advertiser_ids),
            "scope": [4],
        }

    def revoke_token(self, app_id: str, secret: str, access_token: str) -> dict[str, Any]:
        known = self.apps.get(app_id)
        if known is None or not secrets.compare_digest(known[0], secret):
            raise ApiError(R.INVALID_PARTNER, "app_id or secret is invalid")
        info = self.tokens.get(access_token)
        if info is None or info.revoked:
            raise ApiError(R.INVALID_ACCESS_TOKEN, "access_token is invalid or has expired")
        if info.app_id is not None and info.app_id != app_id:
            raise ApiError(R.INVALID_PARTNER, "access_token was not issued to this app_id")
        info.revoked = True
        return {
            "app_id": app_id,
            "advertiser_ids": sorted(info.advertiser_ids or ()),
        }

    def check_token(self, token: str | None) -> TokenInfo:
        if not token:
            raise ApiError(R.EMPTY_ACCESS_TOKEN, "The Access-Token header is missing or empty.")
        info = self.tokens.get(token)
        if info is None or info.revoked:
            raise ApiError(R.INVALID_ACCESS_TOKEN, "The access token is invalid or has expired.")
        return info

    @staticmethod
    def check_advertiser(info: TokenInfo, advertiser_id: str) -> None:
        if info.advertiser_ids is not None and advertiser_id not in info.advertiser_ids:
            raise ApiError(
                R.PERMISSION_ERROR, f"No permission to operate advertiser {advertiser_id}."
            )

    # ----------------------------------------------------------------- files
    def add_file(
        self,
        *,
        advertiser_id: str,
        uploaded_calculate_type: str,
        digests: bytes,
        size_bytes: int,
        lines: int,
        md5: str,
        filename: str,
    ) -> UploadedFile:
        ct = R.canonical_type(uploaded_calculate_type)
        now = self.clock.now()
        entry = UploadedFile(
            file_path=self.new_file_path(),
            advertiser_id=advertiser_id,
            calculate_type=ct,
            uploaded_calculate_type=uploaded_calculate_type,
            digests=digests,
            digest_size=R.digest_hex_chars(ct) // 2,
            size_bytes=size_bytes,
            lines=lines,
            md5=md5,
            filename=filename,
            expires=now + self.config.file_ttl_seconds,
        )
        self.files[entry.file_path] = entry
        self.uploads += 1
        self.upload_bytes += size_bytes
        return entry

    def _resolve_files(
        self, advertiser_id: str, file_paths: Any, calculate_type: str
    ) -> list[UploadedFile]:
        if not isinstance(file_paths, list) or not all(isinstance(p, str) for p in file_paths):
            raise bad("file_paths must be a list of strings")
        if not 1 <= len(file_paths) <= R.PATHS_PER_CALL:
            raise bad(f"file_paths must hold 1 to {R.PATHS_PER_CALL} paths, not {len(file_paths)}")
        now = self.clock.now()
        out: list[UploadedFile] = []
        for path in file_paths:
            entry = self.files.get(path)
            if entry is not None and now >= entry.expires:
                del self.files[path]
                self.expired_files[path] = entry.advertiser_id
                entry = None
            if entry is None and self.expired_files.get(path) == advertiser_id:
                raise ApiError(R.FILE_EXPIRED, f"file_path {path} has expired: upload it again")
            if entry is None or entry.advertiser_id != advertiser_id:
                raise ApiError(R.FILE_NOT_EXIST, f"file_path {path} does not exist")
            if entry.calculate_type != calculate_type:
                raise ApiError(
                    R.FILE_CALCULATE_TYPE_ERROR,
                    f"calculate_type {calculate_type} does not match file_path {path}, "
                    f"uploaded as {entry.uploaded_calculate_type}",
                )
            out.append(entry)
        return out

    # ----------------------------------------------------------------- audiences
    def settle(self, audience: Audience) -> None:
        """Apply the audience's running operation if the clock has passed its end."""
        op = audience.running
        if op is None or self.clock.now() < op.ends:
            return
        if op.action == "REPLACE":
            if op.replacement is None:
                op.replacement = set()
                for f in op.files:
                    op.replacement.update(f.members())
            audience.members, op.replacement = op.replacement, None
        elif op.action in ("CREATE", "APPEND"):
            for f in op.files:
                audience.members.update(f.members())
        elif op.action == "REMOVE":
            for f in op.files:
                audience.members.difference_update(f.members())
        op.done = True
        op.msg = "Success"

    def settle_all(self) -> None:
        for audience in self.audiences.values():
            self.settle(audience)

    def audience(self, advertiser_id: str, audience_id: str) -> Audience:
        entry = self.audiences.get(audience_id)
        if entry is None or entry.advertiser_id != advertiser_id:
            raise bad(f"custom_audience_id {audience_id} does not exist for this advertiser")
        self.settle(entry)
        return entry

    def _start(
        self,
        audience: Audience,
        action: str,
        files: list[UploadedFile],
        replacement: set[bytes] | None = None,
    ) -> None:
        now = self.clock.now()
        ends = now + self.config.operation_seconds
        audience.history.append(Operation(action, now, ends, files, replacement=replacement))
        audience.expires = now + DEFAULT_EXPIRY_DAYS * DAY
        self.settle(audience)

    def create(
        self,
        *,
        advertiser_id: str,
        name: Any,
        file_paths: Any,
        calculate_type: Any,
        sub_type: Any,
        retention_in_days: Any,
    ) -> Audience:
        check_name(name)
        ct = check_calculate_type(calculate_type, upload=False)
        if sub_type is None:
            sub_type = R.SUB_TYPES[0]
        if sub_type not in R.SUB_TYPES:
            raise bad(f"audience_sub_type must be NORMAL or REACH_FREQUENCY, not {sub_type!r}")
        if retention_in_days is not None:
            if isinstance(retention_in_days, bool) or not isinstance(retention_in_days, int):
                raise bad("retention_in_days must be an integer")
            low, high = R.RETENTION_DAYS
            if not low <= retention_in_days <= high:
                raise bad(f"retention_in_days must be in [{low}, {high}], not {retention_in_days}")
        files = self._resolve_files(advertiser_id, file_paths, ct)
        owned = sum(1 for a in self.audiences.values() if a.advertiser_id == advertiser_id)
        if owned >= self.config.max_audiences:
            raise bad(
                f"The advertiser already has {owned} audiences, the maximum is "
                f"{self.config.max_audiences}; delete some before creating more."
            )
        now = self.clock.now()
        audience = Audience(
            audience_id=self.new_audience_id(),
            advertiser_id=advertiser_id,
            name=name,
            calculate_type=ct,
            sub_type=sub_type,
            retention_in_days=retention_in_days,
            create_time=now,
            expires=now + DEFAULT_EXPIRY_DAYS * DAY,
            file_paths=[f.file_path for f in files],
        )
        self.audiences[audience.audience_id] = audience
        self._start(audience, "CREATE", files)
        return audience

    def update(
        self,
        *,
        advertiser_id: str,
        audience_id: Any,
        name: Any,
        file_paths: Any,
        action: Any,
        sub_type: Any,
    ) -> None:
        if not isinstance(audience_id, str | int) or isinstance(audience_id, bool):
            raise bad("custom_audience_id is required")
        audience = self.audience(advertiser_id, str(audience_id))
        now = self.clock.now()
        if audience.is_expiring(now):
            raise bad("An expiring or expired audience cannot be modified; it can only be deleted.")
        if sub_type is not None:
            if sub_type != "REACH_FREQUENCY":
                raise bad("audience_sub_type can only be changed to REACH_FREQUENCY")
            audience.sub_type = sub_type
            return
        if name is None and file_paths is None:
            raise bad("Pass custom_audience_name or file_paths.")
        if name is not None:
            check_name(name)
        if file_paths is None:
            audience.name = name
            return
        if action is None:
            action = R.DEFAULT_ACTION
        if action not in R.ACTIONS:
            raise bad(f"action must be APPEND, REMOVE or REPLACE, not {action!r}")
        files = self._resolve_files(advertiser_id, file_paths, audience.calculate_type)
        running = audience.running
        if running is not None:
            if action == "REPLACE" and running.action == "REPLACE":
                raise ApiError(R.PARAM_ERROR, REPLACE_RUNNING_MESSAGE)
            raise ApiError(R.PARAM_ERROR, BUSY_MESSAGE)
        day = _utc_day(now)
        if audience.day_ops.get(day, 0) >= self.config.daily_operations:
            raise ApiError(R.PARAM_ERROR, quota_message(self.config.daily_operations))
        if action == "REPLACE" and audience.day_replaces.get(day, 0) >= self.config.daily_replaces:
            raise ApiError(R.PARAM_ERROR, REPLACE_QUOTA_MESSAGE)
        size, replacement = self._size_after(audience, action, files)
        if action == "REMOVE" and size == 0:
            raise bad("REMOVE cannot remove all of the audience's data.")
        if size < self.config.min_members:
            raise bad(
                f"The audience would hold {size} members after {action}; an operation may not "
                f"leave fewer than {self.config.min_members} members."
            )
        if name is not None:
            audience.name = name
        audience.day_ops[day] = audience.day_ops.get(day, 0) + 1
        if action == "REPLACE":
            audience.day_replaces[day] = audience.day_replaces.get(day, 0) + 1
            audience.file_paths = [f.file_path for f in files]
        elif action == "APPEND":
            audience.file_paths.extend(f.file_path for f in files)
        else:
            removed = {f.file_path for f in files}
            audience.file_paths = [p for p in audience.file_paths if p not in removed]
        self._start(audience, action, files, replacement)

    @staticmethod
    def _size_after(
        audience: Audience, action: str, files: list[UploadedFile]
    ) -> tuple[int, set[bytes] | None]:
        """Members after ``action`` (and, for REPLACE, the new membership itself)."""
        incoming: set[bytes] = set()
        for f in files:
            incoming.update(f.members())
        if action == "REPLACE":
            return len(incoming), incoming
        members = audience.members
        overlap = sum(1 for d in incoming if d in members)
        if action == "APPEND":
            return len(members) + len(incoming) - overlap, None
        return len(members) - overlap, None

    def delete(self, advertiser_id: str, audience_ids: Any) -> None:
        if not isinstance(audience_ids, list) or not all(
            isinstance(a, str | int) and not isinstance(a, bool) for a in audience_ids
        ):
            raise bad("custom_audience_ids must be a list of audience IDs")
        if not 1 <= len(audience_ids) <= R.DELETE_IDS_PER_CALL:
            raise bad(
                f"custom_audience_ids must hold 1 to {R.DELETE_IDS_PER_CALL} IDs, "
                f"not {len(audience_ids)}"
            )
        ids = [str(a) for a in audience_ids]
        for audience_id in ids:
            self.audience(advertiser_id, audience_id)
        for audience_id in ids:
            self.audiences.pop(audience_id, None)

    # ----------------------------------------------------------------- views
    def details(self, audience: Audience) -> dict[str, Any]:
        self.settle(audience)
        now = self.clock.now()
        return {
            "audience_id": audience.audience_id,
            "name": audience.name,
            "audience_type": "Customer File",
            "audience_sub_type": audience.sub_type,
            "calculate_type": audience.calculate_type,
            "cover_num": len(audience.members),
            # TikTok: false while calculating or once expired.
            "is_valid": audience.running is None and not audience.is_expired(now),
            "is_expiring": audience.is_expiring(now),
            "owner_id": audience.advertiser_id,
            "msg": "Processing" if audience.running is not None else "Ready",
            "error_msg": "",
            "is_creator": True,
            "shared": False,
            "create_time": format_time(audience.create_time),
            "expired_time": format_time(audience.expires),
            "retention_in_days": audience.retention_in_days,
            "file_paths": list(audience.file_paths),
        }

    def history(self, audience: Audience, size: int) -> list[dict[str, Any]]:
        recent = audience.history[-size:] if size else []
        return [
            {
                "action": op.action,
                "action_detail": f"{op.action} with {len(op.files)} file(s)",
                "editor": "open_api",
                "msg": op.msg,
                "opt_time": format_time(op.started),
                "status": "SUCCESS" if op.done else "PROCESSING",
            }
            for op in reversed(recent)
        ]

    def listing(self, advertiser_id: str, ids: list[str] | None) -> list[Audience]:
        found = [a for a in self.audiences.values() if a.advertiser_id == advertiser_id]
        if ids is not None:
            wanted = set(ids)
            found = [a for a in found if a.audience_id in wanted]
        found.sort(key=lambda a: (-a.create_time, a.audience_id))
        return found

    def snapshot(self) -> dict[str, Any]:
        self.settle_all()
        now = self.clock.now()
        return {
            "now": now,
            "clock_offset": self.clock.offset,
            "audiences": [
                {
                    "audience_id": a.audience_id,
                    "advertiser_id": a.advertiser_id,
                    "name": a.name,
                    "calculate_type": a.calculate_type,
                    "cover_num": len(a.members),
                    "is_valid": a.running is None,
                    "running": a.running.action if a.running else None,
                    "operations": [op.action for op in a.history],
                    "operations_today": a.day_ops.get(_utc_day(now), 0),
                    "replaces_today": a.day_replaces.get(_utc_day(now), 0),
                    "file_paths": len(a.file_paths),
                }
                for a in self.audiences.values()
            ],
            "files": len(self.files),
            "uploads": self.uploads,
            "upload_bytes": self.upload_bytes,
            "tokens": len(self.tokens),
        }

    def members_hex(self, audience_id: str) -> frozenset[str]:
        audience = self.audiences.get(audience_id)
        if audience is None:
            raise KeyError(audience_id)
        self.settle(audience)
        return frozenset(d.hex() for d in audience.members)

    def members_digest(self, audience_id: str) -> tuple[int, str]:
        """(count, sha256 of the sorted lowercase hex digests joined by ``\\n``)."""
        hexes = sorted(self.members_hex(audience_id))
        h = hashlib.sha256()
        for i, value in enumerate(hexes):
            h.update((("\n" if i else "") + value).encode())
        return len(hexes), h.hexdigest()


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= R.NAME_MAX_CHARS:
        raise bad(f"custom_audience_name must be 1 to {R.NAME_MAX_CHARS} characters")
    return name


def check_calculate_type(value: Any, *, upload: bool) -> str:
    """A calculate_type TikTok takes (on upload the ``MAID_*`` aliases too, kept as sent)."""
    if value in R.CALCULATE_TYPES or (upload and value in R.UPLOAD_ONLY_TYPES):
        return str(value)
    if value in R.UPLOAD_ONLY_TYPES:
        raise bad(f"calculate_type {value} is accepted on upload only")
    raise bad(f"calculate_type {value!r} is not a valid encryption type")
