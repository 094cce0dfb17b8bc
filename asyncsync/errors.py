"""The exceptions asyncsync raises to its users.

Every error derives from :class:`AsyncSyncError`; the CLI maps each class to an exit code
through its ``exit_code`` attribute (2 bad usage or input, 1 failed, 3 paused)::

    AsyncSyncError                     exit 1 unless a subclass says otherwise
    ├── UsageError(ValueError)         exit 2: an option or argument is wrong
    │   └── NameTakenError             exit 2: a live audience already has the name to create
    ├── InputError                     exit 2: an input file is missing, unreadable or not text
    │   └── NoValidIdsError            exit 2: the input holds no valid ID
    ├── OutputError(OSError)           exit 2: the output directory cannot be written
    ├── StateError                     exit 2: the journal or snapshot store is unusable
    │   └── InputChangedError          exit 2: the input changed since the journaled job began
    ├── TransportError(ConnectionError) a connection failed or was reset (after retries)
    │   ├── RequestTimeout(TimeoutError)
    │   └── OutcomeUnknownError        a create or update may or may not have been carried out
    ├── TikTokError                    ``code != 0``; carries code, message, request_id
    │   ├── AuthError                  token or credential problem (40101-40131, 70001)
    │   ├── BadRequestError            refused as invalid (40000, 40001, 40002, 40906-40909...)
    │   ├── RateLimitedError           too many requests (40016, 40100, 40132, 61000)
    │   ├── TransientError             worth retrying (50000, 50002, 51xxx, 52xxx, HTTP 5xx...)
    │   ├── SignatureMismatchError     40900: the file's MD5 did not match
    │   ├── FileExpiredError           40905 / 40910: an uploaded file_path is no longer known
    │   ├── AudienceBusyError          40002 on update while ``get`` shows an operation running
    │   ├── QuotaExceededError         40002 on update: a daily limit is reached
    │   └── DuplicatedRequestError     40050: the same request was already received
    └── Paused                         exit 3: a quota or a running operation stopped progress;
                                       the journal holds the job and the same command resumes it

Which TikTok code gives which class, and whether the request may have been carried out, is the
table of ``asyncsync.tiktok.codes`` (docs/tiktok-api.md).

A failed task group is unwrapped in one place: :func:`first_error` picks the error to raise
from it, :func:`as_sync_error` makes an unexpected one an ``AsyncSyncError`` for library users.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

__all__ = [
    "AsyncSyncError",
    "AudienceBusyError",
    "AuthError",
    "BadRequestError",
    "DuplicatedRequestError",
    "FileExpiredError",
    "InputChangedError",
    "InputError",
    "NameTakenError",
    "NoValidIdsError",
    "OutcomeUnknownError",
    "OutputError",
    "Paused",
    "QuotaExceededError",
    "RateLimitedError",
    "RequestTimeout",
    "SignatureMismatchError",
    "StateError",
    "TikTokError",
    "TransientError",
    "TransportError",
    "UsageError",
    "as_sync_error",
    "first_error",
]


class AsyncSyncError(Exception):
    """Root of every error asyncsync raises on purpose."""

    exit_code: ClassVar[int] = 1


class UsageError(AsyncSyncError, ValueError):
    """An option or argument is invalid; the message names it."""

    exit_code = 2


class InputError(AsyncSyncError):
    """An input cannot be used; the message names the file (and line when known)."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class NoValidIdsError(InputError):
    """The inputs were read but not one line held a valid ID."""


class OutputError(AsyncSyncError, OSError):
    """The output directory or a file in it cannot be written."""

    exit_code = 2


class StateError(AsyncSyncError):
    """The journal (or another local state file) is corrupt, locked or unwritable."""

    exit_code = 2


class InputChangedError(StateError):
    """The input differs from the one the journaled job started from (use ``--restart``)."""


class NameTakenError(UsageError):
    """A live audience of the advertiser already has the name a create would give, and this
    journal did not make it (``allow_duplicate_name`` / ``--allow-duplicate-name`` opts out).
    ``audience_id`` is that audience."""

    def __init__(self, message: str, *, audience_id: str = "") -> None:
        super().__init__(message)
        self.audience_id = audience_id


class TransportError(AsyncSyncError, ConnectionError):
    """The HTTP exchange failed below TikTok's envelope (reset, refused, bad response)."""


class RequestTimeout(TransportError, TimeoutError):
    """A request did not complete within its timeout."""


class OutcomeUnknownError(TransportError):
    """A request that is not safe to repeat (create, update) may or may not have been carried
    out: its answer was lost, or said something that can come after the work was done (HTTP
    5xx, 50002 SYS_TIMEOUT, 51010 INTERNAL_TIME_OUT, 40202 WRITE_CONFLICT...).

    The client does not resend it: TikTok has no idempotency key, so a blind retry could create a
    second audience or apply an update twice. Read TikTok's state (the audience by name, its
    history) before sending it again. ``endpoint`` names the request; ``answer`` is TikTok's
    error answer when there was one (its ``code``, ``message`` and ``request_id``).
    """

    def __init__(
        self, message: str, *, endpoint: str = "", answer: TikTokError | None = None
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.answer = answer


class TikTokError(AsyncSyncError):
    """TikTok answered with ``code != 0`` (or an HTTP error carrying no envelope).

    ``code`` is TikTok's numeric code (an HTTP status for non-JSON answers), ``message`` its text,
    ``request_id`` the id TikTok support asks for (empty when the answer had none).
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        code: int,
        message: str,
        request_id: str = "",
        *,
        data: Any = None,
        endpoint: str = "",
    ) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.data = data
        self.endpoint = endpoint
        where = f" on {endpoint}" if endpoint else ""
        rid = f", request_id {request_id}" if request_id else ""
        super().__init__(f"TikTok error {code}{where}: {message}{rid}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_tiktok_error,
            (type(self), self.code, self.message, self.request_id, self.endpoint),
        )


def _rebuild_tiktok_error(
    cls: type[TikTokError], code: int, message: str, request_id: str, endpoint: str
) -> TikTokError:
    return cls(code, message, request_id, endpoint=endpoint)


class AuthError(TikTokError):
    """The access token (or app credentials) was refused; retrying cannot help."""


class BadRequestError(TikTokError):
    """TikTok refused the request as invalid; the message names the field."""


class RateLimitedError(TikTokError):
    """TikTok asked us to slow down."""

    retryable = True


class TransientError(TikTokError):
    """A TikTok-side failure that is worth retrying."""

    retryable = True


class SignatureMismatchError(TikTokError):
    """40900: the uploaded bytes did not match ``file_signature``."""


class FileExpiredError(TikTokError):
    """40905 FILE_NOT_EXIST or 40910 FILE_EXPIRED: the file must be uploaded again."""


class AudienceBusyError(TikTokError):
    """40002 on update while TikTok shows an operation running on the audience."""


class QuotaExceededError(TikTokError):
    """40002 on update: a daily quota of the audience is used up."""


class DuplicatedRequestError(TikTokError):
    """40050: TikTok already received the same request; re-read state before acting."""


class Paused(AsyncSyncError):
    """Progress stopped on a quota or a running operation; the same command resumes later.

    ``pending`` describes what is left; ``resume_after`` is a UNIX time when progress can
    continue, if known.
    """

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        pending: dict[str, Any] | None = None,
        resume_after: float | None = None,
        result: Any = None,
    ) -> None:
        super().__init__(message)
        self.pending = pending or {}
        self.resume_after = resume_after
        self.result = result


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise from a failed task group: its first :class:`AsyncSyncError`, else
    its first error that is not a cancellation, else its first."""
    import asyncio  # loaded already wherever a task group ran; not at every CLI start

    leaves = list(_leaves(group))
    for exc in leaves:
        if isinstance(exc, AsyncSyncError):
            return exc
    for exc in leaves:
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return leaves[0] if leaves else group


def as_sync_error(exc: BaseException) -> BaseException:
    """``exc`` as a library user meets it: an ``AsyncSyncError`` as is, an unexpected
    ``Exception`` wrapped in one (``sync failed: <type>: <message>``); cancellations,
    ``KeyboardInterrupt`` and ``SystemExit`` are never wrapped."""
    if isinstance(exc, AsyncSyncError) or not isinstance(exc, Exception):
        return exc
    return AsyncSyncError(f"sync failed: {type(exc).__name__}: {exc}")
