"""The sandbox's HTTP face: TikTok's routes, envelopes, fault middleware, and :class:`Sandbox`.

Every ``/open_api/v1.3/...`` answer is HTTP 200 with ``{code, message, data, request_id}``
(``code != 0`` for errors), except the injected HTTP 503. ``/_sandbox/...`` endpoints inspect and
steer the emulator and answer only on loopback.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import BodyPartReader, web

from asyncsync.errors import UsageError
from asyncsync.sandbox import rules as R
from asyncsync.sandbox.faults import Fault, FaultConfig, FaultInjector, ScriptedAnswer
from asyncsync.sandbox.persist import read_state, save_state
from asyncsync.sandbox.state import (
    ApiError,
    SandboxClock,
    SandboxConfig,
    SandboxState,
    bad,
    check_calculate_type,
    parse_digests,
)

__all__ = ["Sandbox", "build_app"]

P: Final = R.API_PREFIX
LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
_CHUNK: Final = 1024 * 1024
_MAX_FIELD_BYTES: Final = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SANDBOX_KEY: web.AppKey[Sandbox] = web.AppKey("sandbox")


class _Link:
    """Paces upload bodies like a wide-area link: each upload at most ``per_upload`` bytes a
    second, all uploads together at most ``total`` (either None: no cap).

    Reading stops while a chunk's time on the link has not passed, so TCP pushes back on the
    sender exactly as a slow path would. At most one chunk's time is saved up (what the sandbox
    spends between reads is not lost), so a stalled sender earns no larger burst afterwards.
    The DROP fault cuts a request off after its first chunk, unpaced.
    """

    def __init__(self, per_upload: float | None, total: float | None) -> None:
        self.per_upload = per_upload
        self.total = total
        self._total_free = 0.0

    @property
    def paced(self) -> bool:
        return self.per_upload is not None or self.total is not None

    def stream(self) -> _Stream:
        return _Stream(self)


class _Stream:
    def __init__(self, link: _Link) -> None:
        self._link = link
        self._free = 0.0

    async def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more bytes of this upload have crossed the link."""
        link = self._link
        now = asyncio.get_running_loop().time()
        due = now
        if link.per_upload is not None:
            cost = nbytes / link.per_upload
            self._free = max(self._free, now - cost) + cost
            due = self._free
        if link.total is not None:
            cost = nbytes / link.total
            link._total_free = max(link._total_free, now - cost) + cost
            due = max(due, link._total_free)
        if due > now:
            await asyncio.sleep(due - now)


class _Lifecycle(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


def _envelope(sb: Sandbox, code: int, message: str, data: Any) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "data": data if data is not None else {},
        "request_id": sb.state.new_request_id(),
    }
    return web.json_response(body)


def _ok(sb: Sandbox, data: Any = None) -> web.Response:
    return _envelope(sb, 0, "OK", data)


def _str_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad(f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise bad(f"{name} must be a string")
    text = str(value)
    if required and not text:
        raise bad(f"{name} is required")
    return text


def _advertiser(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).isdigit():
        raise bad("advertiser_id is required and must be a numeric string")
    return str(value)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    return body


def _query_list(request: web.Request, name: str) -> list[str] | None:
    """A GET array parameter: a JSON string (``["1","2"]``) or repeated values."""
    values = request.query.getall(name, [])
    if not values:
        return None
    if len(values) == 1 and values[0].lstrip().startswith("["):
        try:
            parsed = json.loads(values[0])
        except json.JSONDecodeError:
            raise bad(f"{name} must be a JSON array of strings") from None
        if not isinstance(parsed, list) or not all(
            isinstance(v, str | int) and not isinstance(v, bool) for v in parsed
        ):
            raise bad(f"{name} must be a JSON array of strings")
        return [str(v) for v in parsed]
    return list(values)


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise bad(f"{name} must be in [{lo}, {hi}], not {value}")
    return value


class _Api:
    """Route handlers of ``/open_api/v1.3``; each returns TikTok's envelope."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    @property
    def state(self) -> SandboxState:
        return self.sb.state

    def _authorize(self, request: web.Request, advertiser_id: str) -> None:
        info = self.state.check_token(request.headers.get("Access-Token"))
        self.state.check_advertiser(info, advertiser_id)

    async def upload(self, request: web.Request) -> web.Response:
        self.state.check_token(request.headers.get("Access-Token"))
        fields: dict[str, str] = {}
        multipart = request.content_type.startswith("multipart/")
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
        elif not multipart:
            raise bad("Content-Type must be multipart/form-data")
        spool: Path | None = None
        size = 0
        too_big = False
        md5 = hashlib.md5()
        filename = ""
        try:
            reader = await request.multipart() if multipart else None
            while reader is not None:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise bad("nested multipart bodies are not supported")
                if part.name == "file":
                    if spool is not None:
                        raise bad("only one file may be uploaded per request")
                    filename = part.filename or ""
                    spool = self.sb._spool_path()
                    pace = self.sb._link.stream() if self.sb._link.paced else None
                    with spool.open("wb") as out:
                        while chunk := await part.read_chunk(_CHUNK):
                            if pace is not None:
                                await pace.take(len(chunk))
                            size += len(chunk)
                            if size > self.sb.config.max_file_bytes:
                                too_big = True  # drain the rest so the answer is readable
                                continue
                            md5.update(chunk)
                            out.write(chunk)
                else:
                    data = await part.read(decode=False)
                    if len(data) > _MAX_FIELD_BYTES:
                        raise bad(f"form field {part.name} is too long")
                    fields[part.name or ""] = data.decode("utf-8", "replace")
            advertiser_id = _advertiser(fields.get("advertiser_id"))
            info = self.state.check_token(request.headers.get("Access-Token"))
            self.state.check_advertiser(info, advertiser_id)
            if spool is None:
                raise bad("file is required")
            name = fields.get("file_name") or filename
            if not name.endswith(R.UPLOAD_SUFFIXES) or not filename.endswith(R.UPLOAD_SUFFIXES):
                raise ApiError(
                    R.FILE_TYPE_ERROR,
                    f"file name must end with .csv or .txt exactly, not {filename!r}",
                )
            signature = fields.get("file_signature", "").strip()
            if not signature:
                raise bad("file_signature is required")
            ct = check_calculate_type(fields.get("calculate_type"), upload=True)
            if too_big:
                raise ApiError(
                    R.FILE_TOO_LARGE,
                    f"The file is larger than the limit of {self.sb.config.max_file_bytes} bytes.",
                )
            if size == 0:
                raise ApiError(R.FILE_EMPTY, "The file is empty.")
            actual = md5.hexdigest()
            if signature.lower() != actual:
                raise ApiError(
                    R.SIGNATURE_ERROR,
                    "The file_signature does not match the MD5 of the uploaded file.",
                )
            digests, lines = await asyncio.to_thread(parse_digests, spool, R.digest_hex_chars(ct))
            entry = self.state.add_file(
                advertiser_id=advertiser_id,
                uploaded_calculate_type=ct,
                digests=digests,
                size_bytes=size,
                lines=lines,
                md5=actual,
                filename=filename,
            )
            return _ok(self.sb, {"file_path": entry.file_path})
        finally:
            if spool is not None:
                spool.unlink(missing_ok=True)

    async def create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        advertiser_id = _advertiser(body.get("advertiser_id"))
        self._authorize(request, advertiser_id)
        audience = self.state.create(
            advertiser_id=advertiser_id,
            name=body.get("custom_audience_name"),
            file_paths=body.get("file_paths"),
            calculate_type=body.get("calculate_type"),
            sub_type=body.get("audience_sub_type"),
            retention_in_days=body.get("retention_in_days"),
        )
        return _ok(self.sb, {"custom_audience_id": audience.audience_id})

    async def update(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        advertiser_id = _advertiser(body.get("advertiser_id"))
        self._authorize(request, advertiser_id)
        self.state.update(
            advertiser_id=advertiser_id,
            audience_id=_str_field(body, "custom_audience_id"),
            name=body.get("custom_audience_name"),
            file_paths=body.get("file_paths"),
            action=body.get("action"),
            sub_type=body.get("audience_sub_type"),
        )
        return _ok(self.sb)

    async def delete(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        advertiser_id = _advertiser(body.get("advertiser_id"))
        self._authorize(request, advertiser_id)
        self.state.delete(advertiser_id, body.get("custom_audience_ids"))
        return _ok(self.sb)

    async def get(self, request: web.Request) -> web.Response:
        advertiser_id = _advertiser(request.query.get("advertiser_id"))
        self._authorize(request, advertiser_id)
        ids = _query_list(request, "custom_audience_ids")
        if not ids or len(ids) > R.GET_IDS_PER_CALL:
            raise bad(f"custom_audience_ids must hold 1 to {R.GET_IDS_PER_CALL} audience IDs")
        history_size = _query_int(request, "history_size", 10, 0, 100)
        out = []
        for audience_id in ids:
            audience = self.state.audience(advertiser_id, audience_id)
            out.append(
                {
                    "audience_details": self.state.details(audience),
                    "audience_history": self.state.history(audience, history_size),
                }
            )
        return _ok(self.sb, {"list": out})

    async def list(self, request: web.Request) -> web.Response:
        advertiser_id = _advertiser(request.query.get("advertiser_id"))
        self._authorize(request, advertiser_id)
        ids = _query_list(request, "custom_audience_ids")
        page = _query_int(request, "page", 1, 1, 10**9)
        page_size = _query_int(request, "page_size", 10, 1, self.sb.config.page_size_max)
        found = self.state.listing(advertiser_id, ids)
        total = len(found)
        chunk = found[(page - 1) * page_size : page * page_size]
        return _ok(
            self.sb,
            {
                "list": [self.state.details(a) for a in chunk],
                "page_info": {
                    "page": page,
                    "page_size": page_size,
                    "total_number": total,
                    "total_page": (total + page_size - 1) // page_size,
                },
            },
        )

    async def access_token(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        app_id = _str_field(body, "app_id") or ""
        secret = _str_field(body, "secret") or ""
        auth_code = _str_field(body, "auth_code") or ""
        return _ok(self.sb, self.state.exchange_auth_code(app_id, secret, auth_code))

    async def revoke_token(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        app_id = _str_field(body, "app_id") or ""
        secret = _str_field(body, "secret") or ""
        token = _str_field(body, "access_token") or ""
        return _ok(self.sb, self.state.revoke_token(app_id, secret, token))

    async def advertisers(self, request: web.Request) -> web.Response:
        info = self.state.check_token(request.headers.get("Access-Token"))
        app_id = request.query.get("app_id", "")
        secret = request.query.get("secret", "")
        known = self.state.apps.get(app_id)
        if known is None or known[0] != secret:
            raise ApiError(R.INVALID_PARTNER, "app_id or secret is invalid")
        ids = sorted(info.advertiser_ids) if info.advertiser_ids is not None else []
        return _ok(
            self.sb,
            {"list": [{"advertiser_id": a, "advertiser_name": f"Sandbox {a}"} for a in ids]},
        )


async def _portal_auth(request: web.Request) -> web.StreamResponse:
    """Grant the authorization at once and redirect with ``auth_code`` and ``state``."""
    sb = request.app[SANDBOX_KEY]
    app_id = request.query.get("app_id", "")
    redirect_uri = request.query.get("redirect_uri", "")
    state = request.query.get("state", "")
    parts = urlsplit(redirect_uri)
    if app_id not in sb.state.apps or parts.scheme not in ("http", "https") or not parts.netloc:
        return web.Response(
            status=400,
            text="<html><body>Unknown app_id or invalid redirect_uri.</body></html>",
            content_type="text/html",
        )
    code = sb.state.issue_auth_code(app_id)
    query = urlencode({"state": state, "code": code, "auth_code": code})
    joined = f"{parts.query}&{query}" if parts.query else query
    raise web.HTTPFound(urlunsplit((parts.scheme, parts.netloc, parts.path, joined, "")))


def _loopback_only(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.remote not in LOOPBACK:
            raise web.HTTPForbidden(text="sandbox control endpoints answer on loopback only")
        return await handler(request)

    return guarded


class _Control:
    """``/_sandbox/...``: inspection and control for tests and benchmarks in another process."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def state(self, request: web.Request) -> web.Response:
        snap = self.sb.state.snapshot()
        snap["fault_counts"] = self.sb.fault_counts()
        snap["request_counts"] = self.sb.request_counts()
        snap["faults"] = self.sb.faults.to_json()
        return web.json_response(snap)

    async def members(self, request: web.Request) -> web.Response:
        audience_id = request.match_info["audience_id"]
        try:
            count, digest = self.sb.state.members_digest(audience_id)
        except KeyError:
            raise web.HTTPNotFound(text=f"no audience {audience_id}") from None
        out: dict[str, Any] = {"audience_id": audience_id, "count": count, "sha256": digest}
        if request.query.get("digests") in ("1", "true"):
            out["digests"] = sorted(self.sb.members(audience_id))
        return web.json_response(out)

    async def faults(self, request: web.Request) -> web.Response:
        try:
            config = FaultConfig.from_json(await self._body(request))
        except (UsageError, TypeError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        self.sb.set_faults(config)
        return web.json_response(config.to_json())

    async def clock(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        seconds = body.get("advance_seconds", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise web.HTTPBadRequest(text="advance_seconds must be a number >= 0")
        return web.json_response({"now": self.sb.clock.advance(float(seconds))})

    async def tokens(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        ids = body.get("advertiser_ids")
        if ids is not None and not isinstance(ids, list):
            raise web.HTTPBadRequest(text="advertiser_ids must be a list or null")
        token = body.get("token")
        try:
            value = self.sb.issue_token(ids, token=token if isinstance(token, str) else None)
        except UsageError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"access_token": value})

    async def auth_codes(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            code = self.sb.issue_auth_code(
                app_id=str(body.get("app_id", "")),
                secret=str(body.get("secret", "")),
                advertiser_ids=[str(a) for a in body.get("advertiser_ids") or []],
            )
        except UsageError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"auth_code": code})

    async def scripts(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            script = ScriptedAnswer.from_json(body)
        except (UsageError, TypeError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        self.sb.script(script)
        return web.json_response(script.to_json())

    async def restart(self, request: web.Request) -> web.Response:
        # Over HTTP only the state is reset: the socket serving this request stays open.
        self.sb.state.reset()
        return web.json_response({"restarted": True})


async def _carry_out(
    sb: Sandbox, request: web.Request, handler: Handler, script: ScriptedAnswer | None
) -> web.StreamResponse:
    """Run the request; answer ``script`` instead when it ran and one is given."""
    if script is not None and script.hold_seconds:
        await asyncio.sleep(script.hold_seconds)
    try:
        response = await handler(request)
    except ApiError as exc:
        return _envelope(sb, exc.code, exc.message, None)
    if script is None or script.answers_as_usual:
        return response
    if not script.hold_seconds:
        sb._use_script(script)
    return _scripted(sb, script)


def _scripted(sb: Sandbox, script: ScriptedAnswer) -> web.Response:
    """The HTTP answer ``script`` describes."""
    if script.http_status is not None:
        return web.Response(
            status=script.http_status,
            text=f"<html><body><h1>{script.http_status}</h1></body></html>",
            content_type="text/html",
        )
    return _envelope(sb, script.code, script.message, None)


def build_app(sb: Sandbox) -> web.Application:
    """The aiohttp application serving ``sb``'s state."""
    api = _Api(sb)

    @web.middleware
    async def persist_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if sb.state_file is not None and request.method == "POST":
                save_state(sb.state, sb.state_file)

    @web.middleware
    async def tiktok_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/open_api/"):
            return await handler(request)
        sb._requests[path] += 1
        if sb.config.latency_seconds:
            await asyncio.sleep(sb.config.latency_seconds)
        slow, fault = sb._injector.draw(path)
        if slow:
            await asyncio.sleep(sb._injector.config.slow_seconds)
        if fault is Fault.DROP:
            if request.can_read_body:
                await request.content.read(_CHUNK)  # the request is cut off mid-body
            if request.transport is not None:
                request.transport.abort()
            # Writing to the aborted transport fails; aiohttp ignores that quietly.
            return web.Response(status=500)
        if fault is Fault.HTTP_503:
            return web.Response(
                status=503,
                text="<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
                content_type="text/html",
            )
        if fault is Fault.RATE_LIMIT:
            return _envelope(sb, 40100, "Too many requests. Please retry in some time.", None)
        if fault is Fault.SERVER_ERROR:
            return _envelope(sb, 50002, "Internal service error. Please retry later.", None)
        script = sb._script_for(path)
        if script is not None and not script.carry_out:
            sb._use_script(script)
            return _scripted(sb, script)
        if script is not None and script.hold_seconds:
            # Taken now, so that requests arriving during the hold are not held too; the work
            # goes on in its own task even if the caller leaves.
            sb._use_script(script)
            await request.read()
            held = asyncio.ensure_future(_carry_out(sb, request, handler, script))
            sb._held.add(held)
            held.add_done_callback(sb._held.discard)
            return await asyncio.shield(held)
        return await _carry_out(sb, request, handler, script)

    app = web.Application(
        middlewares=[persist_middleware, tiktok_middleware], client_max_size=16 * 1024 * 1024
    )
    app[SANDBOX_KEY] = sb
    app.router.add_post(f"{P}/dmp/custom_audience/file/upload/", api.upload)
    app.router.add_post(f"{P}/dmp/custom_audience/create/", api.create)
    app.router.add_post(f"{P}/dmp/custom_audience/update/", api.update)
    app.router.add_post(f"{P}/dmp/custom_audience/delete/", api.delete)
    app.router.add_get(f"{P}/dmp/custom_audience/get/", api.get)
    app.router.add_get(f"{P}/dmp/custom_audience/list/", api.list)
    app.router.add_post(f"{P}/oauth2/access_token/", api.access_token)
    app.router.add_post(f"{P}/oauth2/revoke_token/", api.revoke_token)
    app.router.add_get(f"{P}/oauth2/advertiser/get/", api.advertisers)
    app.router.add_get("/portal/auth", _portal_auth)

    control = _Control(sb)
    for method, route, handler in (
        ("GET", "/_sandbox/state", control.state),
        ("GET", "/_sandbox/audiences/{audience_id}/members", control.members),
        ("POST", "/_sandbox/faults", control.faults),
        ("POST", "/_sandbox/scripts", control.scripts),
        ("POST", "/_sandbox/clock", control.clock),
        ("POST", "/_sandbox/tokens", control.tokens),
        ("POST", "/_sandbox/auth_codes", control.auth_codes),
        ("POST", "/_sandbox/restart", control.restart),
    ):
        app.router.add_route(method, route, _loopback_only(handler))
    return app


SHUTDOWN_GRACE_S: Final = 1.0
"""How long closing (or restarting) the sandbox lets requests in progress finish before their
connections are dropped, as a server process that stops would drop them. aiohttp's default
waits 60 s for every handler, and a handler still reading an upload's body then holds the
"restart" for as long as the client keeps the connection open."""


def _runner(sb: Sandbox) -> web.AppRunner:
    return web.AppRunner(
        build_app(sb), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S
    )


class Sandbox:
    """A TikTok Business API emulator served on loopback; an async context manager.

    ``async with Sandbox() as sb:`` starts it on a free port (``port=0``); ``sb.api_base`` is then
    ``http://127.0.0.1:<port>``. ``issue_token()`` gives a token for any advertiser (or the
    listed ones). ``clock.advance(s)`` moves the sandbox's time (operations end, quota days turn,
    files and auth codes expire). Uploads are spooled to ``spool_dir`` (a temporary directory
    removed on exit when not given). With ``state_file``, the state is loaded from that file at
    start (when it exists) and written to it after every POST and on close, so a restarted
    sandbox serves the same tokens, files and audiences (``asyncsync.sandbox.persist``). A
    Sandbox starts once; after exit it cannot be reused.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        spool_dir: str | Path | None = None,
        faults: FaultConfig | None = None,
        state_file: str | Path | None = None,
    ) -> None:
        self.host = host
        self.state_file = Path(state_file) if state_file is not None else None
        self.port = port
        self.config = config if config is not None else SandboxConfig()
        self.clock = SandboxClock()
        self.state = SandboxState(self.config, self.clock)
        self._injector = FaultInjector(faults if faults is not None else FaultConfig())
        self._link = _Link(self.config.upload_bytes_per_second, self.config.link_bytes_per_second)
        self._requests: Counter[str] = Counter()
        self._scripts: list[ScriptedAnswer] = []
        self._held: set[asyncio.Future[web.StreamResponse]] = set()
        self._given_spool = Path(spool_dir) if spool_dir is not None else None
        self._spool: Path | None = None
        self._spool_seq = 0
        self._runner: web.AppRunner | None = None
        self._lifecycle = _Lifecycle.UNOPENED
        self.api_base = ""

    def __repr__(self) -> str:
        return f"<Sandbox {self._lifecycle.value} {self.api_base or '-'}>"

    async def start(self) -> None:
        if self._lifecycle is not _Lifecycle.UNOPENED:
            raise RuntimeError(f"cannot start a Sandbox that is {self._lifecycle.value}")
        if self._given_spool is not None:
            self._given_spool.mkdir(parents=True, exist_ok=True)
            self._spool = Path(tempfile.mkdtemp(prefix="spool-", dir=self._given_spool))
        else:
            self._spool = Path(tempfile.mkdtemp(prefix="asyncsync-sandbox-"))
        if self.state_file is not None:
            read_state(self.state, self.state_file)
        runner = _runner(self)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.api_base = f"http://{host}:{self.port}"
        self._lifecycle = _Lifecycle.OPEN

    async def close(self) -> None:
        if self._lifecycle is _Lifecycle.CLOSED:
            return
        self._lifecycle = _Lifecycle.CLOSED
        for held in list(self._held):
            held.cancel()
        if self.state_file is not None and self._runner is not None:
            save_state(self.state, self.state_file)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _spool_path(self) -> Path:
        assert self._spool is not None
        self._spool_seq += 1
        return self._spool / f"upload-{self._spool_seq}.part"

    # ----------------------------------------------------------------- control
    def issue_token(
        self, advertiser_ids: Sequence[str] | None = None, *, token: str | None = None
    ) -> str:
        """A token valid for ``advertiser_ids`` (``None``: any advertiser); ``token`` fixes it."""
        return self.state.issue_token(advertiser_ids, token=token)

    def register_app(self, *, app_id: str, secret: str, advertiser_ids: Sequence[str]) -> None:
        """Make ``app_id``/``secret`` known; ``/portal/auth`` grants it ``advertiser_ids``."""
        self.state.register_app(app_id, secret, advertiser_ids)

    def issue_auth_code(self, *, app_id: str, secret: str, advertiser_ids: Sequence[str]) -> str:
        """Register the app (if new) and return a one-hour, single-use auth_code for it."""
        self.state.register_app(app_id, secret, advertiser_ids)
        return self.state.issue_auth_code(app_id, list(advertiser_ids))

    @property
    def faults(self) -> FaultConfig:
        return self._injector.config

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault configuration (reseeding its RNG); counts are kept."""
        self._injector.configure(faults)

    def members(self, audience_id: str) -> frozenset[str]:
        """Lowercase hex digests the audience holds (as of its last finished operation)."""
        return self.state.members_hex(audience_id)

    def script(self, answer: ScriptedAnswer) -> None:
        """Answer the next matching request(s) with ``answer`` (see :class:`ScriptedAnswer`);
        scripts apply in the order given."""
        self._scripts.append(answer)

    def clear_scripts(self) -> None:
        self._scripts.clear()

    def _script_for(self, path: str) -> ScriptedAnswer | None:
        return next((s for s in self._scripts if s.matches(path)), None)

    def _use_script(self, script: ScriptedAnswer) -> None:
        if script.use():
            self._scripts = [s for s in self._scripts if s is not script]

    def fault_counts(self) -> dict[str, int]:
        return {kind.value: self._injector.counts.get(kind.value, 0) for kind in Fault}

    def request_counts(self) -> dict[str, int]:
        """Requests received per ``/open_api/`` path (faulted ones included)."""
        return dict(self._requests)

    async def restart(self) -> None:
        """Forget files, audiences and auth codes, as a TikTok that lost its state would.

        Tokens, registered apps, the clock, fault settings and counters are kept; the listening
        socket is re-opened on the same port, so open connections are dropped.
        """
        if self._lifecycle is not _Lifecycle.OPEN or self._runner is None:
            raise RuntimeError("the sandbox is not running")
        self.state.reset()
        await self._runner.cleanup()
        runner = _runner(self)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
