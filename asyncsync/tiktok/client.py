"""``TikTokClient``: the async client of the TikTok Business API audience endpoints."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp.payload import AsyncIterablePayload

from asyncsync.errors import (
    AsyncSyncError,
    AudienceBusyError,
    BadRequestError,
    InputError,
    OutcomeUnknownError,
    QuotaExceededError,
    RequestTimeout,
    SignatureMismatchError,
    TikTokError,
    TransportError,
    UsageError,
)
from asyncsync.events import Reporter, RequestRetried, UploadProgress, null_reporter
from asyncsync.rules.limits import (
    DEFAULT_API_BASE,
    DEFAULT_REQUESTS_PER_SECOND,
    MAX_DELETE_IDS_PER_CALL,
    MAX_FILE_BYTES,
    MAX_LIST_PAGE_SIZE,
    Action,
)
from asyncsync.tiktok import codes, wire
from asyncsync.tiktok.audience_state import is_expired, operation_running
from asyncsync.tiktok.codes import Outcome
from asyncsync.tiktok.ratelimit import TokenBucket
from asyncsync.tiktok.retry import RetryPolicy
from asyncsync.tiktok.wire import (
    AccessToken,
    Audience,
    Envelope,
    MalformedAnswer,
    NotJson,
    UploadedFile,
)

__all__ = ["ClientState", "ClientStats", "TikTokClient"]

log = logging.getLogger("asyncsync.tiktok")

MAYBE: Final = Outcome.MAYBE

T = TypeVar("T")

UPLOAD_CHUNK_BYTES: Final = 1 << 20
"""Bytes read from disk and written to the socket at a time during an upload."""
MAX_ANSWER_BYTES: Final = 16 << 20
"""Largest answer body the client reads; anything bigger is a broken answer, not data."""
UPLOAD_MIN_BYTES_PER_S: Final = 1_000_000
"""Uploads get ``timeout + size / UPLOAD_MIN_BYTES_PER_S`` seconds."""
MAX_LIST_PAGES: Final = 10_000
_MD5_RE: Final = re.compile(r"[0-9a-fA-F]{32}")
_SNIPPET_CHARS: Final = 120


class ClientState(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


@dataclass(slots=True)
class ClientStats:
    """Counters of one client: HTTP requests sent (retries included), retries, file bytes
    accepted by TikTok (each successfully uploaded file counted once)."""

    api_calls: int = 0
    retries: int = 0
    bytes_uploaded: int = 0


class _Failure(Exception):
    """One failed attempt, classified for the retry loop (never leaves this module).

    ``retryable``: the kind of failure is worth another try. ``side_effect``: the request may
    have been carried out even though no usable answer came back.
    """

    def __init__(
        self,
        error: AsyncSyncError,
        *,
        retryable: bool,
        side_effect: bool,
        unreachable: bool = False,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.side_effect = side_effect
        self.unreachable = unreachable
        """The server could not be reached at all (nothing was sent): retried for the
        policy's ``outage`` seconds."""


class _FileChunks:
    """An async iterator over the first ``size`` bytes of a file opened by the caller, read in a
    worker thread in ``UPLOAD_CHUNK_BYTES`` blocks, reporting the bytes sent so far."""

    def __init__(self, handle: IO[bytes], size: int, on_progress: Callable[[int], None]) -> None:
        self._handle = handle
        self._size = size
        self._on_progress = on_progress
        self.sent = 0

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        remaining = self._size - self.sent
        if remaining <= 0:
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(self._handle.read, min(UPLOAD_CHUNK_BYTES, remaining))
        if not chunk:
            # The file shrank after its size was announced in Content-Length: abort the request
            # rather than leave the server waiting for bytes that will never come.
            raise OSError(f"{self._handle.name} ended after {self.sent} of {self._size} bytes")
        self.sent += len(chunk)
        self._on_progress(self.sent)
        return chunk


class _FilePayload(AsyncIterablePayload):
    """A streamed file part whose size is known up front, so the request has a Content-Length."""

    def __init__(self, chunks: _FileChunks, size: int, content_type: str) -> None:
        super().__init__(chunks, content_type=content_type)
        self._declared_size = size

    @property
    def size(self) -> int:
        return self._declared_size


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(8 * UPLOAD_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class TikTokClient:
    """Async client of the TikTok Business API custom-audience endpoints.

    Use it as an async context manager (``async with TikTokClient(token) as client:``); it owns
    one ``aiohttp.ClientSession`` unless ``session`` is given, in which case that session is
    borrowed and never closed. ``timeout`` bounds each request in seconds (an upload gets
    ``timeout`` plus one second per MB). Failed requests are retried according to ``retry``
    (rate limits, transient TikTok codes, HTTP 5xx, timeouts, dropped connections); every request,
    retries included, first takes a token from a bucket refilled at ``requests_per_second``
    (``None``: no client-side limit). ``stats`` counts requests, retries and uploaded bytes;
    ``reporter`` receives ``RequestRetried`` and ``UploadProgress`` events.

    Errors: :class:`UsageError` for invalid arguments (before anything is sent),
    :class:`InputError` for an unreadable file, subclasses of :class:`TikTokError` for TikTok's
    codes, :class:`TransportError` / :class:`RequestTimeout` when the exchange itself failed after
    the last attempt, :class:`OutcomeUnknownError` when a create or update may or may not have
    been carried out (a lost answer, HTTP 5xx, 50002...: the table of
    :mod:`asyncsync.tiktok.codes`, explained in docs/tiktok-api.md). The access
    token and app secrets never appear in ``repr``, logs, exception text or URLs.

    ``api_base`` must be ``https://``, or plain ``http://`` on a loopback host (a local sandbox):
    the token travels in a header, so any other plain-http host is refused unless
    ``allow_plain_http=True`` says the network in between is trusted.
    """

    def __init__(
        self,
        access_token: str | None,
        *,
        api_base: str = DEFAULT_API_BASE,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        requests_per_second: float | None = DEFAULT_REQUESTS_PER_SECOND,
        reporter: Reporter = null_reporter,
        allow_plain_http: bool = False,
    ) -> None:
        if access_token is not None and (not isinstance(access_token, str) or not access_token):
            raise UsageError("access_token must be a non-empty string (or None for OAuth calls)")
        api_base = wire.check_api_base(api_base, allow_plain_http=allow_plain_http)
        if not timeout > 0:
            raise UsageError(f"timeout must be positive, got {timeout!r}")
        if requests_per_second is not None and not requests_per_second > 0:
            raise UsageError(f"requests_per_second must be positive, got {requests_per_second!r}")
        self._token = access_token
        self.api_base = api_base.rstrip("/")
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._reporter = reporter
        self._session = session
        self._owns_session = session is None
        self.requests_per_second = requests_per_second
        self._limiter = (
            TokenBucket(requests_per_second) if requests_per_second is not None else None
        )
        self._state = ClientState.UNOPENED

    # ------------------------------------------------------------------ lifecycle

    def __repr__(self) -> str:
        token = "***" if self._token else "None"
        return (
            f"<TikTokClient api_base={self.api_base!r} state={self._state.name.lower()} "
            f"access_token={token}>"
        )

    @property
    def state(self) -> ClientState:
        return self._state

    async def __aenter__(self) -> Self:
        if self._state is ClientState.OPENED:
            raise RuntimeError("this TikTokClient is already open")
        if self._state is ClientState.CLOSED:
            raise RuntimeError("a closed TikTokClient cannot be reopened; create a new one")
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session if the client owns it; a borrowed session stays open."""
        if self._state is ClientState.CLOSED:
            return
        self._state = ClientState.CLOSED
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            from asyncsync import __version__

            self._session = aiohttp.ClientSession(
                headers={"User-Agent": f"asyncsync/{__version__}"},
                timeout=aiohttp.ClientTimeout(total=None),
            )
        self._state = ClientState.OPENED
        return self._session

    def _ensure_open(self) -> aiohttp.ClientSession:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this TikTokClient is closed")
        if self._session is None or self._state is ClientState.UNOPENED:
            return self._open()
        return self._session

    # ------------------------------------------------------------------ redaction

    def _redact(self, text: str, secrets: Sequence[str] = ()) -> str:
        for secret in (self._token, *secrets):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    # ------------------------------------------------------------------ the request loop

    async def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        make_body: Callable[[], AbstractContextManager[Any]] | None = None,
        idempotent: bool = True,
        time_limit: float | None = None,
        auth: bool = True,
        secrets: Sequence[str] = (),
    ) -> T:
        """Send one API request, retrying per policy, and return ``parse(data)``.

        Every failure, whatever its origin (aiohttp, a timeout, the envelope, ``data``), is turned
        into an :class:`AsyncSyncError` here and only here.
        """
        session = self._ensure_open()
        endpoint = f"{path.strip('/')}/"
        url = wire.url_for(self.api_base, path)
        headers: dict[str, str] = {}
        if auth:
            if not self._token:
                raise UsageError(f"an access token is required for {endpoint}")
            headers["Access-Token"] = self._token
        policy = self.retry.effective()
        limit = time_limit or self.timeout
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(
                    session, method, url, endpoint, parse, headers,
                    json_body=json_body, params=params, make_body=make_body,
                    limit=limit, attempt=attempt, secrets=secrets,
                )  # fmt: skip
            except _Failure as failure:
                error = failure.error
                if failure.side_effect and not idempotent:
                    raise OutcomeUnknownError(
                        f"{endpoint} was sent but its outcome is unknown ({error}); it is not "
                        "resent automatically because it is not idempotent: check whether it "
                        "took effect before sending it again",
                        endpoint=endpoint,
                        answer=error if isinstance(error, TikTokError) else None,
                    ) from error
                if not failure.retryable:
                    raise error from failure.__cause__
                elapsed = time.monotonic() - started
                if failure.unreachable and policy.wait and policy.outage > 0:
                    # An outage: ridden out for ``outage`` seconds, whatever the attempts.
                    delay = min(policy.backoff(attempt), policy.outage_delay)
                    if elapsed + delay > policy.outage:
                        raise type(error)(
                            f"{error} (still unreachable after {elapsed:.0f} s of retries)"
                        ) from failure.__cause__
                else:
                    delay = policy.backoff(attempt)
                    if attempt >= policy.attempts or (
                        policy.total_timeout is not None and elapsed + delay > policy.total_timeout
                    ):
                        raise error from failure.__cause__
                self.stats.retries += 1
                log.info(
                    "retrying %s %s after attempt %d in %.2f s: %s",
                    method, endpoint, attempt, delay, error,
                )  # fmt: skip
                self._reporter(
                    RequestRetried(
                        endpoint=endpoint, attempt=attempt, delay=delay, reason=str(error)
                    )
                )
                await policy.sleep(delay)

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        endpoint: str,
        parse: Callable[[Any], T],
        headers: dict[str, str],
        *,
        json_body: dict[str, Any] | None,
        params: dict[str, str] | None,
        make_body: Callable[[], AbstractContextManager[Any]] | None,
        limit: float,
        attempt: int,
        secrets: Sequence[str],
    ) -> T:
        if self._limiter is not None:
            await self._limiter.acquire()
        body_cm: AbstractContextManager[Any] = make_body() if make_body else nullcontext(None)
        with body_cm as data:
            self.stats.api_calls += 1
            log.debug("%s %s attempt %d", method, endpoint, attempt)
            sent_at = time.monotonic()
            try:
                async with asyncio.timeout(limit):
                    async with session.request(
                        method,
                        url,
                        params=params,
                        json=json_body,
                        data=data,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=limit),
                        allow_redirects=False,
                        raise_for_status=False,
                    ) as resp:
                        status = resp.status
                        content_type = resp.content_type
                        body = await self._read_body(resp, endpoint)
            except _Failure:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise self._translate(exc, endpoint, limit, secrets) from exc
        elapsed_ms = (time.monotonic() - sent_at) * 1000
        return self._interpret(status, content_type, body, endpoint, parse, secrets, elapsed_ms)

    def _translate(
        self, exc: BaseException, endpoint: str, limit: float, secrets: Sequence[str]
    ) -> _Failure:
        """The one place where aiohttp's and the OS's exceptions become ours."""
        detail = self._redact(_collapse(str(exc)) or type(exc).__name__, secrets)
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return _Failure(
                RequestTimeout(f"{endpoint}: could not connect within {limit:g} s"),
                retryable=True,
                side_effect=False,
                unreachable=True,
            )
        if isinstance(exc, TimeoutError):
            return _Failure(
                RequestTimeout(f"{endpoint}: no answer within {limit:g} s"),
                retryable=True,
                side_effect=True,
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            # The connection was never established: nothing reached TikTok. aiohttp's own text
            # says "ssl:default" even for plain http: the message names the real scheme.
            scheme = urlsplit(self.api_base).scheme or "https"
            reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
            where = f"{scheme}://{exc.host}:{exc.port}"
            return _Failure(
                TransportError(
                    f"{endpoint}: cannot connect to {where}: {self._redact(reason, secrets)}"
                ),
                retryable=True,
                side_effect=False,
                unreachable=True,
            )
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            detail = "the server closed the connection before answering"
        return _Failure(
            TransportError(f"{endpoint}: connection failed: {detail}"),
            retryable=True,
            side_effect=True,
        )

    async def _read_body(self, resp: aiohttp.ClientResponse, endpoint: str) -> bytes:
        too_big = _Failure(
            TransportError(
                f"{endpoint}: the answer is larger than {MAX_ANSWER_BYTES} bytes "
                f"(HTTP {resp.status}, {resp.content_type}); not a TikTok answer"
            ),
            retryable=False,
            side_effect=True,
        )
        if resp.content_length is not None and resp.content_length > MAX_ANSWER_BYTES:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    def _interpret(
        self,
        status: int,
        content_type: str,
        body: bytes,
        endpoint: str,
        parse: Callable[[Any], T],
        secrets: Sequence[str],
        elapsed_ms: float,
    ) -> T:
        try:
            envelope: Envelope | None = wire.decode_envelope(body)
            problem = ""
        except NotJson:
            envelope = None
            snippet = self._redact(
                _collapse(body[:_SNIPPET_CHARS].decode("utf-8", "replace")), secrets
            )
            problem = f"a body that is not JSON ({content_type or 'no content type'}): {snippet!r}"
        except MalformedAnswer as exc:
            envelope = None
            problem = f"a malformed envelope: {exc}"
        log.debug(
            "%s -> HTTP %d code %s request_id %s in %.0f ms",
            endpoint,
            status,
            envelope.code if envelope else "-",
            envelope.request_id if envelope else "-",
            elapsed_ms,
        )
        if envelope is not None and envelope.code != 0:
            rule = codes.rule_for_code(envelope.code)
            error = wire.error_for_code(
                envelope.code,
                self._redact(envelope.message, secrets),
                envelope.request_id,
                endpoint=endpoint,
            )
            raise _Failure(error, retryable=rule.retry, side_effect=rule.outcome is MAYBE)
        if status >= 400 or (status >= 300 and envelope is None):
            error = wire.error_for_http_status(
                status, problem or "with a success envelope", endpoint=endpoint
            )
            # Any 5xx may come after the request was handled (docs/tiktok-api.md).
            rule = codes.rule_for_http_status(status)
            raise _Failure(error, retryable=rule.retry, side_effect=rule.outcome is MAYBE)
        if envelope is None:
            retryable = problem.startswith("a body that is not JSON")
            raise _Failure(
                TransportError(f"{endpoint}: HTTP {status} with {problem}"),
                retryable=retryable,
                side_effect=True,
            )
        try:
            return parse(envelope.data)
        except MalformedAnswer as exc:
            rid = f" (request_id {envelope.request_id})" if envelope.request_id else ""
            raise _Failure(
                TransportError(f"{endpoint}: malformed answer: {exc}{rid}"),
                retryable=False,
                side_effect=True,
            ) from None

    # ------------------------------------------------------------------ OAuth

    @staticmethod
    def authorization_url(
        app_id: str,
        redirect_uri: str,
        state: str | None = None,
        *,
        portal_base: str = "https://business-api.tiktok.com",
    ) -> str:
        """The advertiser authorization URL.

        ``{portal_base}/portal/auth?app_id=…&state=…&redirect_uri=…``, every value URL-encoded.
        """
        if not app_id:
            raise UsageError("app_id must not be empty")
        if not redirect_uri:
            raise UsageError("redirect_uri must not be empty")
        query: list[tuple[str, str]] = [("app_id", app_id)]
        if state is not None:
            query.append(("state", state))
        query.append(("redirect_uri", redirect_uri))
        return f"{portal_base.rstrip('/')}/portal/auth?{urlencode(query)}"

    async def exchange_auth_code(self, *, app_id: str, secret: str, auth_code: str) -> AccessToken:
        """Trade an auth code (valid once, for an hour) for a long-lived access token.

        Not retried after a lost answer (:class:`OutcomeUnknownError`): the code is single-use.
        """
        for name, value in (("app_id", app_id), ("secret", secret), ("auth_code", auth_code)):
            if not value:
                raise UsageError(f"{name} must not be empty")
        return await self._call(
            "POST",
            wire.ACCESS_TOKEN,
            wire.parse_access_token,
            json_body={"app_id": app_id, "auth_code": auth_code, "secret": secret},
            idempotent=False,
            auth=False,
            secrets=(secret, auth_code),
        )

    async def revoke_token(self, *, app_id: str, secret: str, access_token: str) -> None:
        """Invalidate ``access_token``."""
        for name, value in (("app_id", app_id), ("secret", secret), ("access_token", access_token)):
            if not value:
                raise UsageError(f"{name} must not be empty")
        await self._call(
            "POST",
            wire.REVOKE_TOKEN,
            _ignore,
            json_body={"app_id": app_id, "secret": secret, "access_token": access_token},
            auth=False,
            secrets=(secret, access_token),
        )

    # ------------------------------------------------------------------ upload

    async def upload_file(
        self,
        advertiser_id: str,
        path: str | Path,
        calculate_type: str,
        *,
        md5: str | None = None,
    ) -> UploadedFile:
        """Upload one customer file (name ending ``.txt`` or ``.csv``, at most 250 MB).

        The file is streamed from disk in 1 MiB blocks, never held whole in memory; each retry
        re-opens it. ``md5`` is its hex MD5 (computed by one streaming read when not given). If
        TikTok reports a signature mismatch (40900) the MD5 is recomputed from disk and the file
        uploaded once more.
        """
        file = Path(path)
        wire.validate_upload_filename(file.name)
        ct = wire.validate_calculate_type(calculate_type, upload=True)
        advertiser_id = wire.require_id(advertiser_id, "advertiser_id")
        try:
            info = await asyncio.to_thread(file.stat)
        except OSError as exc:
            raise InputError(f"{file}: cannot read: {exc.strerror}", path=str(file)) from None
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{file}: not a regular file", path=str(file))
        size = info.st_size
        if size > MAX_FILE_BYTES:
            raise InputError(
                f"{file}: {size} bytes is more than TikTok's {MAX_FILE_BYTES} byte limit",
                path=str(file),
            )
        if md5 is not None:
            if not isinstance(md5, str) or not _MD5_RE.fullmatch(md5):
                raise UsageError(f"md5 must be 32 hex digits, got {md5!r:.60}")
            md5 = md5.lower()
        else:
            md5 = await self._md5(file)
        try:
            file_path = await self._upload_once(advertiser_id, file, size, ct.value, md5)
        except SignatureMismatchError as mismatch:
            fresh = await self._md5(file)
            log.warning(
                "%s: TikTok reported a signature mismatch (sent %s, file now %s); uploading again",
                file, md5, fresh,
            )  # fmt: skip
            md5 = fresh
            try:
                file_path = await self._upload_once(advertiser_id, file, size, ct.value, md5)
            except SignatureMismatchError as again:
                raise again from mismatch
        self.stats.bytes_uploaded += size
        return UploadedFile(file_path=file_path, md5=md5, bytes=size)

    async def _md5(self, file: Path) -> str:
        try:
            return await asyncio.to_thread(_md5_of_file, file)
        except OSError as exc:
            raise InputError(f"{file}: cannot read: {exc.strerror}", path=str(file)) from None

    async def _upload_once(
        self, advertiser_id: str, file: Path, size: int, calculate_type: str, md5: str
    ) -> str:
        reporter = self._reporter
        name = file.name
        content_type = "text/csv" if name.lower().endswith(".csv") else "text/plain"

        def progress(sent: int) -> None:
            reporter(UploadProgress(path=str(file), sent=sent, total=size))

        @contextmanager
        def body() -> Iterator[aiohttp.MultipartWriter]:
            try:
                handle = file.open("rb")
            except OSError as exc:
                raise InputError(f"{file}: cannot read: {exc.strerror}", path=str(file)) from None
            with handle:
                now = os.fstat(handle.fileno()).st_size
                if now != size:
                    raise InputError(
                        f"{file}: changed during the upload ({size} bytes, now {now})",
                        path=str(file),
                    )
                form = aiohttp.MultipartWriter("form-data")
                for field_name, value in (
                    ("advertiser_id", advertiser_id),
                    ("file_signature", md5),
                    ("calculate_type", calculate_type),
                ):
                    part = form.append(value)
                    part.set_content_disposition("form-data", name=field_name)
                file_part = _FilePayload(_FileChunks(handle, size, progress), size, content_type)
                file_part.set_content_disposition("form-data", name="file", filename=name)
                form.append_payload(file_part)
                yield form

        return await self._call(
            "POST",
            wire.UPLOAD,
            _parse_file_path,
            make_body=body,
            time_limit=self.timeout + size / UPLOAD_MIN_BYTES_PER_S,
        )

    # ------------------------------------------------------------------ audiences

    async def create_audience(
        self,
        advertiser_id: str,
        name: str,
        file_paths: Sequence[str],
        calculate_type: str,
        *,
        audience_sub_type: str | None = None,
        retention_in_days: int | None = None,
    ) -> str:
        """Create a customer-file audience from 1..500 uploaded file_paths; returns its id.

        Not idempotent (TikTok has no idempotency key): an answer that leaves open whether the
        audience was made (a lost or unreadable answer, HTTP 5xx, 50002 SYS_TIMEOUT, 51010
        INTERNAL_TIME_OUT, 40202 WRITE_CONFLICT... see :mod:`asyncsync.tiktok.codes`) raises
        :class:`OutcomeUnknownError` instead of being resent: look the name up before creating
        again. Answers that say the request was not carried out (rate limits) are retried.
        """
        payload = wire.create_payload(
            advertiser_id,
            name,
            file_paths,
            calculate_type,
            audience_sub_type=audience_sub_type,
            retention_in_days=retention_in_days,
        )
        return await self._call(
            "POST", wire.CREATE, _parse_audience_id, json_body=payload, idempotent=False
        )

    async def update_audience(
        self,
        advertiser_id: str,
        audience_id: str,
        *,
        name: str | None = None,
        file_paths: Sequence[str] | None = None,
        action: Action | str | None = None,
    ) -> None:
        """Rename an audience and/or apply file_paths with an explicit ``action``.

        ``file_paths`` without ``action`` raises :class:`UsageError`: the API's own default is
        REPLACE. Not idempotent: an answer that leaves open whether the update was carried out
        (a lost answer, HTTP 5xx, 50002, 51010, 40202...) raises :class:`OutcomeUnknownError`.

        TikTok answers 40002 (PARAM_ERROR) both for a bad parameter and for an audience that
        cannot take an operation now; what it means is read from TikTok's state
        (docs/tiktok-api.md, "40002 on update"): a message speaking of a daily quota raises
        :class:`QuotaExceededError`; an audience that ``get`` shows calculating raises
        :class:`AudienceBusyError`; an expiring or expired audience, or a second 40002 while
        the audience is idle, raises :class:`BadRequestError` with TikTok's code, message and
        request_id. After a first 40002 with the audience idle (its operation may just have
        ended) the update is sent once more.
        """
        payload = wire.update_payload(
            advertiser_id, audience_id, name=name, file_paths=file_paths, action=action
        )
        refusals = 0
        while True:
            try:
                await self._call("POST", wire.UPDATE, _ignore, json_body=payload, idempotent=False)
                return
            except BadRequestError as exc:
                if exc.code != codes.PARAM_ERROR:
                    raise
                refusals += 1
                await self._explain_refused_update(payload, exc, refusals)

    async def _explain_refused_update(
        self, payload: dict[str, Any], refused: BadRequestError, refusals: int
    ) -> None:
        """Raise what a 40002 on update means, or return to have the update sent once more."""
        advertiser_id = payload["advertiser_id"]
        audience_id = payload["custom_audience_id"]
        args = (refused.code, refused.message, refused.request_id)
        if _speaks_of_daily_quota(refused.message):
            raise QuotaExceededError(*args, endpoint=refused.endpoint) from refused
        try:
            found = await self.get_audiences(advertiser_id, [audience_id])
        except TikTokError:
            raise refused from None
        audience = next((a for a in found if a.audience_id == audience_id), None)
        if audience is None:
            raise refused
        if operation_running(audience):
            raise AudienceBusyError(*args, endpoint=refused.endpoint) from refused
        if audience.is_expiring or is_expired(audience):
            raise BadRequestError(
                refused.code,
                f"audience {audience_id} is expiring or expired and can only be deleted "
                f"(TikTok: {refused.message})",
                refused.request_id,
                endpoint=refused.endpoint,
            ) from refused
        if refusals >= 2:
            raise BadRequestError(
                refused.code,
                f"{refused.message} (refused {refusals} times while the audience had no "
                "operation running: a parameter error, not a busy audience)",
                refused.request_id,
                endpoint=refused.endpoint,
            ) from refused

    async def delete_audiences(self, advertiser_id: str, audience_ids: Sequence[str]) -> None:
        """Delete audiences, at most 100 per request."""
        wire.require_id(advertiser_id, "advertiser_id")
        ids = wire.require_ids(audience_ids, "custom_audience_ids")
        for batch in wire.batched(ids, MAX_DELETE_IDS_PER_CALL):
            payload = wire.delete_payload(advertiser_id, batch)
            await self._call("POST", wire.DELETE, _ignore, json_body=payload)

    async def get_audiences(
        self, advertiser_id: str, audience_ids: Sequence[str], *, history_size: int | None = None
    ) -> list[Audience]:
        """Details (and up to ``history_size`` history entries) of the given audiences."""
        wire.get_params(advertiser_id, audience_ids, history_size=history_size)
        ids = wire.require_ids(audience_ids, "custom_audience_ids")
        found: list[Audience] = []
        for batch in wire.batched(ids, wire.MAX_GET_IDS_PER_CALL):
            params = wire.get_params(advertiser_id, batch, history_size=history_size)
            found.extend(await self._call("GET", wire.GET, wire.parse_audiences, params=params))
        return found

    async def iter_audiences(
        self, advertiser_id: str, *, page_size: int = MAX_LIST_PAGE_SIZE
    ) -> AsyncIterator[Audience]:
        """Every audience of the advertiser, page after page."""
        wire.list_params(advertiser_id, 1, page_size)
        seen: set[str] = set()
        page = 1
        while page <= MAX_LIST_PAGES:
            params = wire.list_params(advertiser_id, page, page_size)
            result = await self._call("GET", wire.LIST, _page_parser(page), params=params)
            for audience in result.audiences:
                if audience.audience_id not in seen:
                    seen.add(audience.audience_id)
                    yield audience
            if result.total_page is not None:
                if page >= result.total_page:
                    return
            elif len(result.audiences) < page_size:
                return
            if not result.audiences:
                return
            page += 1

    async def list_audiences(
        self, advertiser_id: str, *, page_size: int = MAX_LIST_PAGE_SIZE
    ) -> list[Audience]:
        """Every audience of the advertiser (all pages)."""
        return [a async for a in self.iter_audiences(advertiser_id, page_size=page_size)]


_DAILY_QUOTA_WORDS: Final = ("quota", "daily", "per day")


def _speaks_of_daily_quota(message: str) -> bool:
    """TikTok publishes no wording for its daily-limit refusal; these words are our assumption
    (docs/tiktok-api.md, "40002 on update")."""
    lowered = message.lower()
    return any(word in lowered for word in _DAILY_QUOTA_WORDS)


def _ignore(data: Any) -> None:
    return None


def _page_parser(page: int) -> Callable[[Any], wire.Page]:
    def parse(data: Any) -> wire.Page:
        return wire.parse_page(data, page)

    return parse


def _parse_file_path(data: Any) -> str:
    return wire.require_str(data, "file_path")


def _parse_audience_id(data: Any) -> str:
    return wire.require_str(data, "custom_audience_id")
