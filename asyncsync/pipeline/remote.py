"""Inputs in object storage or behind HTTP(S): ``s3://``, ``gs://``, ``az://``, ``https://``.

Read through ``fsspec``, streamed: a remote object is read front to back in large blocks
(``BLOCK_BYTES`` a request), never downloaded whole first. Credentials come from each store's
own standard places, as its fsspec backend finds them (AWS: environment, profiles, instance
roles; GCP: application default credentials; Azure: ``AZURE_STORAGE_*`` and the default
credential chain); nothing here reads, holds or prints them. ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` points ``s3://`` at an S3-compatible store.

An object is identified by what the store says about it (:meth:`RemoteObject.identity`: ETag,
version or generation, else modification time; and size), which is what the sync journal
records, so a rerun resumes an unchanged input and refuses a changed one as for a local file. A read
that fails (connection reset, server gone) is retried from the byte where it stopped, a few
times with backoff, after checking that the object still has the identity it had when the
run began: a changed object is an error, never a silent mix of two versions.

Names shown to the user (errors, manifest, journal) drop a URL's user info and query string,
which may hold credentials (a presigned URL's signature).
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from asyncsync.errors import InputError

__all__ = [
    "BLOCK_BYTES",
    "REMOTE_SCHEMES",
    "RemoteObject",
    "RemoteStream",
    "display_name",
    "filesystem",
    "is_remote",
]

REMOTE_SCHEMES: Final = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "http": None,
    "https": None,
}
"""URL schemes read through fsspec, with the asyncsync extra that brings their backend."""

BLOCK_BYTES: Final = 32 * 1024 * 1024
"""Bytes fetched by one read request: few requests per object, bounded memory per input."""
FIRST_BLOCK_BYTES: Final = 1024 * 1024
"""The first request of a read is smaller: checking an input's first bytes stays cheap."""
RETRIES: Final = 4
"""Reads retried after a failure (from the byte where the last one stopped) before giving up."""
_BACKOFF_S: Final = 0.5
_URL: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CONTENT_KEYS: Final = ("etag", "versionid", "version_id", "generation", "md5hash")
_TIME_KEYS: Final = ("last_modified", "lastmodified", "updated", "mtime")


def is_remote(name: str) -> bool:
    """Whether ``name`` is a URL of a scheme read through fsspec."""
    match = _URL.match(name)
    return match is not None and match.group(1).lower() in REMOTE_SCHEMES


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


@dataclass(frozen=True, slots=True, eq=False)
class RemoteObject:
    """One object in a store: where it is and what it was when first looked at."""

    url: str
    fs: Any
    path: str
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def lookup(cls, url: str) -> RemoteObject:
        """The object at ``url`` (one metadata request). Raises ``InputError`` when it is
        missing, a prefix rather than an object, or unreachable."""
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
        return cls(url=url, fs=fs, path=path, info=info)

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


class _NoRanges(Exception):
    """The server answered a range request with the whole object."""


class RemoteStream:
    """Reads one object front to back in blocks, fetching the next block while the current one
    is consumed; a failed fetch is retried (the same byte range) after checking that the object
    is unchanged, and the end of the read checks it once more.

    Memory: two blocks (the first is ``FIRST_BLOCK_BYTES``, the others ``block_bytes``) plus
    what the caller asked for.
    """

    def __init__(
        self, obj: RemoteObject, *, block_bytes: int = BLOCK_BYTES, retries: int = RETRIES
    ) -> None:
        self.obj = obj
        self.block_bytes = block_bytes
        self.retries = retries
        self.size = obj.size
        self._next = 0  # first byte not yet fetched or scheduled
        self._buf = b""
        self._pos = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asyncsync-remote")
        self._ahead: Future[bytes] | None = None
        self._file: Any = None  # only when the store gives no size (plain streaming)
        self._checked_end = False

    def _fetch(self, start: int, end: int) -> bytes:
        failures = 0
        while True:
            try:
                data = bytes(self.obj.fs.cat_file(self.obj.path, start=start, end=end))
                if start == 0 and len(data) > end - start:
                    raise _NoRanges  # a server that ignores Range sends the whole object
                if len(data) != end - start:
                    raise OSError(f"got {len(data)} bytes for a range of {end - start}")
                return data
            except _NoRanges:
                raise
            except Exception as exc:  # backends raise their own types (botocore, aiohttp...)
                failures += 1
                if failures > self.retries:
                    raise OSError(
                        f"reading failed at byte {start} after {failures} attempts: {_reason(exc)}"
                    ) from exc
            time.sleep(_BACKOFF_S * 2 ** (failures - 1))
            self._check_unchanged()

    def _check_unchanged(self, *, final: bool = False) -> None:
        """Raise ``OSError`` if the object's identity changed. Between retries, a store that is
        unreachable or (coming back from an outage) does not list the object yet is left to
        the next fetch attempt; at the end of the read it must be there, unchanged."""
        try:
            self.obj.fs.invalidate_cache(self.obj.path)
            info = dict(self.obj.fs.info(self.obj.path))
        except FileNotFoundError:
            if final:
                raise OSError("the object was deleted while being read") from None
            return
        except Exception:  # backends raise their own types
            if final:
                raise
            return
        if _identity(self.obj.info) != _identity(info):
            raise OSError("the object changed while being read (its ETag/version/size differ)")

    def _schedule(self) -> None:
        assert self.size is not None
        if self._ahead is None and self._next < self.size:
            step = FIRST_BLOCK_BYTES if self._next == 0 else self.block_bytes
            start, end = self._next, min(self.size, self._next + step)
            self._next = end
            self._ahead = self._pool.submit(self._fetch, start, end)

    def _refill(self) -> bool:
        """Move the fetched block into the buffer; False at the end of the object."""
        self._schedule()
        if self._ahead is None:
            if not self._checked_end:
                self._checked_end = True
                self._check_unchanged(final=True)
            return False
        ahead, self._ahead = self._ahead, None
        self._buf, self._pos = ahead.result(), 0
        if self._next > FIRST_BLOCK_BYTES:  # a reader past the first block reads on: fetch ahead
            self._schedule()
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest for -1); fewer only at the end. Raises ``OSError``."""
        if self.size is None:
            if self._file is None:
                # block_size 0: one streamed GET where the backend offers it (HTTP).
                self._file = self.obj.fs.open(self.obj.path, "rb", block_size=0)
            return bytes(self._file.read(n))
        parts: list[bytes] = []
        want = n if n >= 0 else (1 << 62)
        while want > 0:
            try:
                more = self._pos < len(self._buf) or self._refill()
            except _NoRanges:  # nothing was handed out yet: stream it from the start instead
                self.size = None
                return self.read(n)
            if not more:
                break
            take = self._buf[self._pos : self._pos + want]
            self._pos += len(take)
            want -= len(take)
            parts.append(take)
        return b"".join(parts)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._buf = b""
        if self._file is not None:
            self._file.close()
            self._file = None
