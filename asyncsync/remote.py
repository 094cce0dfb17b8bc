"""Inputs in object storage or behind HTTP(S): ``s3://``, ``gs://``, ``az://``, ``https://``.

Streamed, never downloaded whole first, and read front to back by a :class:`RemoteStream`
(one block fetched ahead on a thread) from a :class:`BlockSource`, chosen in one place
(:func:`_source_for`):

* ``s3://bucket/key``: looked up with one HEAD and read with one streamed GET through botocore
  (:class:`_StreamedGet`), ``STREAM_BLOCK_BYTES`` at a time. The GET opened for the first
  block (the checks of an input: compression, text, CSV header) is kept open for the read that
  follows, so an input costs one HEAD and one GET. A failure resumes the read with
  ``Range: bytes=N-``. Every GET carries ``If-Match`` with the ETag seen at lookup, so that a
  store holding another version answers 412 instead of sending its bytes.
* ``gs://``, ``az://``, ``https://`` (and ``s3://`` URLs with a query, or without botocore):
  ranged requests of ``BLOCK_BYTES`` through fsspec; a server that ignores Range is read as one
  streamed GET.

The trade-off of one stream. A GET per block costs a request per 32 MiB and, on a store that
copies the whole object to serve any range (moto, the S3 emulator the tests and benchmarks run,
does: a 4 MiB range of a 370 MB object comes at 27 MB/s, a 64 MiB one at about 300 MB/s), the
whole object per request; one streamed GET costs one request and goes as fast as one
connection goes (1.2 GB/s from moto on loopback). On AWS S3 a ranged GET costs only its range,
but one connection carries about 100 MB/s, less than the hashing workers take on a few cores:
AWS's answer is several concurrent ranged GETs of 8 to 16 MiB each. This reader does not open
them: it favours one request per input and byte-exact resumption over peak throughput from
AWS, where a large export read from EC2 is bounded by that one connection.

Credentials come from each store's own standard places, as its fsspec backend (and, for S3,
botocore, which s3fs brings) finds them (AWS: environment, profiles, instance roles; GCP:
application default credentials; Azure: ``AZURE_STORAGE_*`` and the default credential chain);
nothing here reads, holds or prints them. ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
points ``s3://`` at an S3-compatible store.

An object is identified by what the store says about it (:meth:`RemoteObject.identity`: ETag,
version or generation, else modification time; and size), which is what the sync journal
records, so a rerun resumes an unchanged input and refuses a changed one as for a local file. A read
that fails (connection reset, server gone) is retried from the byte where it stopped, a few
times with backoff, after checking that the object still has the identity it had when the
run began; the end of a read checks it once more: a changed object is an error, never a
silent mix of two versions.

The command line looks its object inputs up ahead (:func:`look_ahead`), before it imports the
command: the lookup of an input then takes what was found, its first block and parked GET
included. This module imports neither numpy nor the pipeline, so that it can.

Names shown to the user (errors, manifest, journal) drop a URL's user info and query string,
which may hold credentials (a presigned URL's signature).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from asyncsync.errors import InputError
from asyncsync.locations import REMOTE_SCHEMES, is_remote

__all__ = [
    "BLOCK_BYTES",
    "REMOTE_SCHEMES",
    "RemoteObject",
    "RemoteStream",
    "display_name",
    "filesystem",
    "forget_look_ahead",
    "is_remote",
    "look_ahead",
]

BLOCK_BYTES: Final = 32 * 1024 * 1024
"""Bytes fetched by one ranged read request: few requests per object, bounded memory per input."""
STREAM_BLOCK_BYTES: Final = 4 * 1024 * 1024
"""Bytes taken at a time from a streamed GET (a read size, not a request): the pipeline's
default chunk size, so that :meth:`RemoteStream.read1` hands each block on as it came."""
FIRST_BLOCK_BYTES: Final = 1024 * 1024
"""The first request of a read is smaller: checking an input's first bytes stays cheap."""
RETRIES: Final = 4
"""Reads retried after a failure (from the byte where the last one stopped) before giving up."""
_BACKOFF_S: Final = 0.5
_CONTENT_KEYS: Final = ("etag", "versionid", "version_id", "generation", "md5hash")
_TIME_KEYS: Final = ("last_modified", "lastmodified", "updated", "mtime")
_SKIP_BYTES: Final = 2 * FIRST_BLOCK_BYTES
_MAX_PARKED: Final = 4
_T = TypeVar("_T")


def display_name(url: str) -> str:
    """``url`` without user info and query string (they may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = host if parts.scheme.lower() in ("http", "https") else parts.netloc.split("@")[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _storage_options(protocol: str) -> dict[str, Any]:
    if protocol in ("s3", "s3a"):
        # A failed request is retried by RemoteStream (after checking the object is unchanged),
        # so botocore's own retries stay few: an outage is not waited out twice over.
        options: dict[str, Any] = {
            "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}},
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        return options
    return {}


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for ``url``. Raises ``InputError`` naming the extra
    to install when the scheme's backend is missing."""
    import fsspec

    scheme = url.split("://", 1)[0].lower()
    try:
        fs, path = fsspec.core.url_to_fs(url, **_storage_options(scheme))
    except ImportError:
        extra = REMOTE_SCHEMES.get(scheme)
        hint = f"pip install 'asyncsync[{extra}]'" if extra else "pip install aiohttp"
        raise InputError(
            f"{display_name(url)}: reading {scheme}:// needs its fsspec backend ({hint})",
            path=display_name(url),
        ) from None
    except (ValueError, OSError) as exc:
        raise InputError(f"{display_name(url)}: {_reason(exc)}", path=display_name(url)) from None
    return fs, str(path)


def _reason(exc: BaseException) -> str:
    """A one-line reason for a store's error, without anything that could be a credential."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"(?i)(signature|credential|token|key)=[^&\s]+", r"\1=…", text)
    return text[:300]


def _identity(info: dict[str, Any]) -> dict[str, Any]:
    """What the store says identifies this version of the object (JSON-able): its ETag,
    version or generation when it has one (content identity: the same bytes put again keep
    their ETag), else its modification time; and its size."""
    lowered = {str(k).lower(): v for k, v in info.items()}

    def pick(keys: tuple[str, ...]) -> dict[str, Any]:
        return {
            key: value if isinstance(value, int | float | str) else str(value)
            for key in keys
            if (value := lowered.get(key)) is not None and value != ""
        }

    out = pick(_CONTENT_KEYS) or pick(_TIME_KEYS)
    size = info.get("size")
    if isinstance(size, int):
        out["size"] = size
    return out


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class RemoteObject:
    """One object in a store: where it is and what it was when first looked at.

    ``fs`` (its fsspec filesystem) is made when first used: an ``s3://`` object read as text
    never needs one (botocore looks it up and reads it; importing s3fs and making its client
    would double the start-up of a short run).
    """

    url: str
    path: str
    info: dict[str, Any] = field(default_factory=dict)
    made_fs: list[Any] = field(default_factory=list, repr=False)
    first_block: list[bytes] = field(default_factory=list, init=False, repr=False)
    """The object's first ``FIRST_BLOCK_BYTES`` once read: checking an input reads its first
    bytes several times (compression, text, CSV header) before the read itself."""
    parked: list[_Parked] = field(default_factory=list, init=False, repr=False)
    """A streamed GET of the object left open after its first block, and the byte it is at:
    the read that follows the checks takes it on (see :class:`_StreamedGet`)."""

    @property
    def fs(self) -> Any:
        if not self.made_fs:
            self.made_fs.append(filesystem(self.url)[0])
        return self.made_fs[0]

    @classmethod
    def lookup(cls, url: str) -> RemoteObject:
        """The object at ``url`` (one metadata request). Raises ``InputError`` when it is
        missing, a prefix rather than an object, or unreachable.

        When :func:`look_ahead` was asked for ``url``, its answer is returned instead (waiting
        for it if need be), to every lookup of ``url`` until :func:`forget_look_ahead`: the
        same request made earlier, its first block read and its GET left open for the read
        (taken by one read only), and one identity for the whole command (the sync journal's
        record and the read's ``If-Match`` agree)."""
        ahead = _looked_ahead(url)
        if ahead is not None:
            return ahead
        return cls._ask(url)

    @classmethod
    def _ask(cls, url: str) -> RemoteObject:
        where = _s3_key(url)
        if where is not None:
            with contextlib.suppress(Exception):  # else fsspec looks again and says what it is
                return cls(url=url, path="/".join(where), info=_s3_info(*where))
        fs, path = filesystem(url)
        name = display_name(url)
        try:
            fs.invalidate_cache(path)
            info = dict(fs.info(path))
        except FileNotFoundError:
            raise InputError(f"{name}: no such object", path=name) from None
        except Exception as exc:  # the backends raise their own types (botocore, aiohttp...)
            raise InputError(f"{name}: cannot read it ({_reason(exc)})", path=name) from None
        if info.get("type") == "directory":
            raise InputError(f"{name}: is a prefix (directory), not an object", path=name)
        return cls(url=url, path=path, info=info, made_fs=[fs])

    def stat(self) -> dict[str, Any]:
        """What the store says of the object now (one metadata request). Raises
        ``FileNotFoundError`` when it is gone, the backend's error when it cannot tell."""
        where = _s3_key(self.url)
        if where is not None:
            try:
                return _s3_info(*where)
            except Exception as exc:  # botocore's ClientError, without importing it eagerly
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    raise FileNotFoundError(self.name) from None
                raise
        self.fs.invalidate_cache(self.path)
        return dict(self.fs.info(self.path))

    @property
    def name(self) -> str:
        return display_name(self.url)

    @property
    def size(self) -> int | None:
        size = self.info.get("size")
        return size if isinstance(size, int) else None

    def identity(self) -> dict[str, Any]:
        """The journal's record of this input: its shown URL and the store's identity fields."""
        return {"path": self.name, **_identity(self.info)}

    def head(self, n: int) -> bytes:
        """The object's first ``n`` bytes (fewer if it is shorter). Raises ``InputError``."""
        stream = self.open()
        try:
            return stream.read(n)
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read ({exc})", path=self.name) from None
        finally:
            stream.close()

    def open(self) -> RemoteStream:
        """A sequential byte stream over the object (``read(n)``, ``close()``)."""
        return RemoteStream(self)


LOOK_AHEAD_WAIT_S: Final = 1.0
"""The longest :func:`look_ahead` waits for the store's metadata answers before it returns."""
_AHEAD: dict[str, Future[RemoteObject]] = {}
_AHEAD_LOCK = threading.Lock()


def look_ahead(urls: Iterable[str], *, wait_s: float = LOOK_AHEAD_WAIT_S) -> None:
    """Look each of ``urls`` up and read its first block now, on a thread, for the
    :meth:`RemoteObject.lookup` of it that comes later in this process (until
    :func:`forget_look_ahead`).

    The command line calls this before it imports the command (numpy, the pipeline). It
    returns once the objects are looked up (or after ``wait_s``): importing and setting up
    botocore, and the metadata request, run first, on their own, rather than sharing the
    interpreter with those imports; the GET of each object's first block then goes out, and
    the store prepares its answer while this process imports the command. The read that
    follows takes that GET on, as after any lookup (benchmarks/README.md, "Inputs where they
    live").

    One attempt at each request, on the look-ahead's own daemon thread: a command that ends
    early (a usage error, Ctrl-C) never waits for the store, and a store that fails is retried
    by the reader, not twice over. A lookup that failed is reported by the lookup that finds it,
    as it would have failed there; a first block that could not be read is read by the reader.
    Nothing is printed."""
    pending: list[tuple[str, Future[RemoteObject]]] = []
    with _AHEAD_LOCK:
        for url in urls:
            if url not in _AHEAD:
                fut: Future[RemoteObject] = Future()
                _AHEAD[url] = fut
                pending.append((url, fut))
    if not pending:
        return
    asked = threading.Event()
    thread = threading.Thread(
        target=_look, args=(pending, asked), name="asyncsync-look-ahead", daemon=True
    )
    thread.start()
    asked.wait(wait_s)


def forget_look_ahead() -> None:
    """Drop what :func:`look_ahead` found (the command is over)."""
    with _AHEAD_LOCK:
        _AHEAD.clear()


def _look(pending: list[tuple[str, Future[RemoteObject]]], asked: threading.Event) -> None:
    found: list[tuple[RemoteObject, Future[RemoteObject]]] = []
    try:
        for url, fut in pending:
            fut.set_running_or_notify_cancel()
            try:
                found.append((RemoteObject._ask(url), fut))
            except Exception as exc:
                fut.set_exception(exc)
    finally:
        asked.set()
    for obj, fut in found:
        _first_block_once(obj)
        fut.set_result(obj)


def _first_block_once(obj: RemoteObject) -> None:
    """Read ``obj``'s first block into ``obj.first_block`` with one request on this thread (a
    streamed GET stays parked on ``obj`` for the read); on any failure, leave it to the
    reader (its retries, its errors)."""
    end = min(obj.size or 0, FIRST_BLOCK_BYTES)
    if end == 0:
        return
    source = _source_for(obj)
    try:
        data = source.fetch(0, end)
        if len(data) == end:
            obj.first_block[:] = [data]
    except Exception:  # the reader's to retry and report
        pass
    finally:
        with contextlib.suppress(Exception):
            source.close()


def _looked_ahead(url: str) -> RemoteObject | None:
    """What :func:`look_ahead` found for ``url`` (waiting for it), None if it was not asked;
    raises the error its lookup met."""
    with _AHEAD_LOCK:
        fut = _AHEAD.get(url)
    return None if fut is None else fut.result()


class _NoRanges(Exception):
    """The server answered a range request with the whole object."""


class _Changed(Exception):
    """The object is no longer the one looked up (the message says how): never retried."""


class BlockSource(Protocol):
    """How a :class:`RemoteStream` gets the bytes of its object: ``fetch`` is called for
    consecutive ranges, front to back, from one thread at a time. After a failed ``fetch``,
    the next one is for the same ``start`` (a resumed read)."""

    @property
    def block_bytes(self) -> int:
        """The size of the blocks this source serves best."""
        ...

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``. Raises ``_NoRanges`` (the server ignores Range),
        ``_Changed`` (the store says the object changed), anything else for a failure that
        a retry may cure."""
        ...

    def close(self) -> None:
        """Let go of any connection held."""
        ...


class _RangedReads:
    """One ranged request per block through fsspec (``gs://``, ``az://``, ``https://``, and
    ``s3://`` without botocore)."""

    block_bytes: Final = BLOCK_BYTES

    def __init__(self, obj: RemoteObject) -> None:
        self.obj = obj

    def fetch(self, start: int, end: int) -> bytes:
        data = bytes(self.obj.fs.cat_file(self.obj.path, start=start, end=end))
        if start == 0 and len(data) > end - start:
            raise _NoRanges  # a server that ignores Range sends the whole object
        return data

    def close(self) -> None:
        pass


_client_lock = threading.Lock()


def _s3_key(url: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://`` object that botocore looks up and reads, or None: not S3,
    s3fs (the ``s3`` extra, which brings botocore) missing, or a URL that is not plainly
    ``s3://bucket/key`` (a prefix, a query or fragment): those are left to s3fs."""
    parts = urlsplit(url)
    if REMOTE_SCHEMES.get(parts.scheme.lower()) != "s3" or "?" in url or "#" in url:
        return None
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or "@" in bucket or not key or key.endswith("/"):
        return None
    if importlib.util.find_spec("s3fs") is None or importlib.util.find_spec("botocore") is None:
        return None
    return bucket, key


def _s3_client() -> Any:
    """A botocore S3 client configured from the same places as s3fs's: the endpoint and retries
    of ``_storage_options``, credentials and region from the environment, the profile and
    instance roles."""
    endpoint = _storage_options("s3").get("endpoint_url")
    with _client_lock:  # botocore sessions are not thread-safe while making a client
        return _cached_s3_client(endpoint, os.environ.get("AWS_PROFILE"))


@functools.cache
def _cached_s3_client(endpoint: str | None, profile: str | None) -> Any:
    """One client per endpoint and profile (clients are thread-safe; making one loads the
    service model), as fsspec keeps one filesystem per set of options."""
    import botocore.config
    import botocore.session

    config = botocore.config.Config(**_storage_options("s3")["config_kwargs"])
    session = botocore.session.get_session()
    return session.create_client("s3", endpoint_url=endpoint, config=config)


def _s3_info(bucket: str, key: str) -> dict[str, Any]:
    """The object's metadata (one HEAD), in the shape s3fs's ``info`` gives it: the journal's
    identity of an input is the same whichever looked it up."""
    out = _s3_client().head_object(Bucket=bucket, Key=key)
    return {
        "ETag": out.get("ETag", ""),
        "LastModified": out.get("LastModified", ""),
        "size": out["ContentLength"],
        "name": f"{bucket}/{key}",
        "type": "file",
        "StorageClass": out.get("StorageClass", "STANDARD"),
        "VersionId": out.get("VersionId"),
        "ContentType": out.get("ContentType"),
    }


def _error_code(exc: BaseException) -> str:
    """The error code of a botocore ``ClientError`` (``"404"``, ``"PreconditionFailed"``...),
    else ``""``."""
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", "")) if isinstance(error, dict) else ""


class _Parked:
    """A streamed GET left open at byte ``pos``. At most ``_MAX_PARKED`` in a process: each
    holds a connection out of botocore's pool."""

    _count = 0
    _lock = threading.Lock()

    def __init__(self, body: Any, pos: int) -> None:
        self._body: Any = body
        self.pos = pos

    @classmethod
    def of(cls, body: Any, pos: int) -> _Parked | None:
        """``body`` parked, or None when as many are parked as may be."""
        with cls._lock:
            if cls._count >= _MAX_PARKED:
                return None
            cls._count += 1
        return cls(body, pos)

    def take(self) -> Any:
        """The body (None once taken or closed)."""
        with self._lock:
            body, self._body = self._body, None
            if body is not None:
                _Parked._count -= 1
        return body

    def close(self) -> None:
        body = self.take()
        if body is not None:
            body.close()


class _StreamedGet:
    """``s3://`` through botocore: one streamed GET of the whole object, read a block at a
    time. Its first block serves the checks of an input (compression, text, CSV header), and
    the GET waits, parked on the :class:`RemoteObject` (at most ``_MAX_PARKED`` in a process,
    closed when the object is collected), for the read that follows, which takes it on: an
    input costs one GET. A failed read is resumed with ``Range: bytes=N-``; a read that starts
    within the first ``_SKIP_BYTES`` asks for the whole object and drops what it already has.
    Every GET carries ``If-Match`` with the ETag seen at lookup: the store answers 412 rather
    than the bytes of another version, so a resumed read never mixes two versions."""

    block_bytes: Final = STREAM_BLOCK_BYTES

    def __init__(self, obj: RemoteObject, bucket: str, key: str, etag: str) -> None:
        self.obj = obj
        self.bucket = bucket
        self.key = key
        self.etag = etag
        self._body: Any = None
        self._pos = 0  # the next byte of _body

    @classmethod
    def of(cls, obj: RemoteObject) -> _StreamedGet | None:
        """The streamed reader of ``obj``, or None when it is not in S3, has no ETag, or
        botocore is missing."""
        etag = obj.info.get("ETag")
        where = _s3_key(obj.url)
        if not isinstance(etag, str) or not etag or where is None:
            return None
        return cls(obj, *where, etag)

    def _get(self, start: int, end: int | None) -> Any:
        client = _s3_client()
        ranged: dict[str, str] = {}
        if start > 0 or end is not None:
            ranged["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = client.get_object(
                Bucket=self.bucket, Key=self.key, IfMatch=self.etag, **ranged
            )
        except Exception as exc:  # botocore's ClientError, without importing it eagerly
            if _error_code(exc) in ("PreconditionFailed", "412"):
                changed = "changed while being read (the store no longer has its ETag)"
                raise _Changed(changed) from None
            raise
        if ranged and not answer.get("ContentRange"):
            answer["Body"].close()
            if start == 0:
                raise _NoRanges
            raise OSError("the store ignored the Range header")
        return answer["Body"]

    def _park(self) -> None:
        body, self._body = self._body, None
        parked = _Parked.of(body, self._pos) if self._pos < (self.obj.size or 0) else None
        if parked is None:
            body.close()
            return
        self.obj.parked.append(parked)
        weakref.finalize(self.obj, parked.close)

    def _take_parked(self, start: int) -> None:
        while self.obj.parked:
            try:
                parked = self.obj.parked.pop()
            except IndexError:  # taken meanwhile
                return
            if self._body is None and parked.pos == start:
                self._body, self._pos = parked.take(), start
            else:
                parked.close()

    def fetch(self, start: int, end: int) -> bytes:
        try:
            if self._body is None:
                self._take_parked(start)
            if start == 0 and self._body is None:
                self._body, self._pos = self._get(0, None), 0
                data = bytes(self._body.read(end))
                self._pos = len(data)
                self._park()
                return data
            if self._body is None or self._pos != start:
                self.close()
                skip = start if start <= _SKIP_BYTES else 0
                self._body, self._pos = self._get(start - skip, None), start - skip
                while self._pos < start:
                    dropped = len(self._body.read(start - self._pos))
                    if not dropped:
                        break
                    self._pos += dropped
            data = bytes(self._body.read(end - start))
        except BaseException:
            self.close()
            raise
        self._pos += len(data)
        return data

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()


def _source_for(obj: RemoteObject) -> BlockSource:
    """Where the way of reading each kind of store is decided."""
    return _StreamedGet.of(obj) or _RangedReads(obj)


class RemoteStream:
    """Reads one object front to back in blocks, fetching the next block while the current one
    is consumed (from a :class:`BlockSource`: a streamed GET for ``s3://``, ranged requests
    through fsspec for the others). A failed fetch is retried from its first byte after
    checking that the object is unchanged; the end of the read checks it once more (retried
    as a fetch is).

    Memory: two blocks (the first is ``FIRST_BLOCK_BYTES``, the others ``block_bytes``: by
    default ``STREAM_BLOCK_BYTES`` from a streamed GET, ``BLOCK_BYTES`` by ranged requests) plus
    what the caller asked for.
    """

    def __init__(
        self, obj: RemoteObject, *, block_bytes: int | None = None, retries: int = RETRIES
    ) -> None:
        self.obj = obj
        self._source = _source_for(obj)
        self.block_bytes = block_bytes or self._source.block_bytes
        self.retries = retries
        self.size = obj.size
        self._next = 0  # first byte not yet fetched or scheduled
        self._buf = b""
        self._pos = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asyncsync-remote")
        self._ahead: Future[bytes] | None = None
        self._file: Any = None  # only when the store gives no size (plain streaming)
        self._checked_end = False
        self._closed = False

    def _retrying(self, start: int, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, retried with backoff after checking the object is unchanged."""
        failures = 0
        while True:
            try:
                if failures:
                    self._check_unchanged()
                return attempt()
            except _NoRanges:
                raise
            except _Changed as exc:
                raise OSError(f"the object {exc}") from None
            except Exception as exc:  # backends raise their own types (botocore, aiohttp...)
                failures += 1
                if failures > self.retries:
                    raise OSError(
                        f"reading failed at byte {start} after {failures} attempts: {_reason(exc)}"
                    ) from exc
            time.sleep(_BACKOFF_S * 2 ** (failures - 1))

    def _fetch(self, start: int, end: int) -> bytes:
        def attempt() -> bytes:
            data = self._source.fetch(start, end)
            if len(data) != end - start:
                raise OSError(f"got {len(data)} bytes for a range of {end - start}")
            return data

        data = self._retrying(start, attempt)
        if start == 0:
            self.obj.first_block[:] = [data]
        return data

    def _check_unchanged(self, *, final: bool = False) -> None:
        """Raise ``_Changed`` if the object's identity changed. Between retries, a store that is
        unreachable or (coming back from an outage) does not list the object yet is left to
        the next fetch attempt; at the end of the read it must be there (the check is retried
        as a fetch is), unchanged."""
        try:
            info = self.obj.stat()
        except FileNotFoundError:
            if final:  # retried: a store back from an outage may not list it at once
                raise FileNotFoundError("the object is gone") from None
            return
        except Exception:  # backends raise their own types
            if final:
                raise
            return
        if _identity(self.obj.info) != _identity(info):
            raise _Changed("changed while being read (its ETag/version/size differ)")

    def _schedule(self) -> None:
        assert self.size is not None
        if self._ahead is None and self._next < self.size:
            step = FIRST_BLOCK_BYTES if self._next == 0 else self.block_bytes
            start, end = self._next, min(self.size, self._next + step)
            self._next = end
            if start == 0 and self.obj.first_block:
                self._ahead = Future()
                self._ahead.set_result(self.obj.first_block[0])
            else:
                self._ahead = self._pool.submit(self._fetch, start, end)

    def _refill(self) -> bool:
        """Move the fetched block into the buffer; False at the end of the object."""
        self._schedule()
        if self._ahead is None:
            if not self._checked_end:
                self._source.close()
                assert self.size is not None
                self._retrying(self.size, lambda: self._check_unchanged(final=True))
                self._checked_end = True
            return False
        ahead, self._ahead = self._ahead, None
        self._buf, self._pos = ahead.result(), 0
        if self._next > FIRST_BLOCK_BYTES:  # a reader past the first block reads on: fetch ahead
            self._schedule()
        return True

    def _piece(self, n: int) -> bytes | None:
        """Up to ``n`` bytes of the current block (the next one once it is used up), None at
        the end. Raises ``_NoRanges`` when nothing was handed out yet and the store ignores
        Range, after setting ``size`` to None: the object is then read as one stream."""
        try:
            more = self._pos < len(self._buf) or self._refill()
        except _NoRanges:
            self.size = None
            raise
        if not more:
            return None
        take = self._buf[self._pos : self._pos + n]  # the block itself when taken whole
        self._pos += len(take)
        return take

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest for -1); fewer only at the end. Raises ``OSError``."""
        if self.size is None:
            if self._file is None:
                # block_size 0: one streamed GET where the backend offers it (HTTP).
                self._file = self.obj.fs.open(self.obj.path, "rb", block_size=0)
            return bytes(self._file.read(n))
        parts: list[bytes] = []
        want = n if n >= 0 else (1 << 62)
        try:
            while want > 0 and (take := self._piece(want)) is not None:
                want -= len(take)
                parts.append(take)
        except _NoRanges:  # nothing was handed out yet: stream it from the start instead
            return self.read(n)
        return b"".join(parts)

    def read1(self, n: int) -> bytes:
        """Up to ``n`` bytes from one fetched block: fewer when that block ends first, ``b""``
        only at the end. A block taken whole is handed out as it came, without a copy (the
        reader of a text input asks for blocks of its chunk size). Raises ``OSError``."""
        if self.size is None:
            return self.read(n)
        try:
            take = self._piece(n)
        except _NoRanges:  # nothing was handed out yet: stream it from the start instead
            return self.read(n)
        return b"" if take is None else take

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ahead is not None:
            self._ahead.cancel()
        # On the fetching thread, after the fetch in flight: a body is read by one thread only.
        self._pool.submit(self._source.close)
        self._pool.shutdown(wait=False)
        self._buf = b""
        if self._file is not None:
            self._file.close()
            self._file = None
