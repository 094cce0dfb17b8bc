"""A failed task group reaches the caller as one error, chosen by one rule for every layer."""

from __future__ import annotations

import asyncio

from asyncsync.errors import AsyncSyncError, OutputError, as_sync_error, first_error


def test_the_first_asyncsync_error_wins_even_when_nested() -> None:
    ours = OutputError("disk full")
    group = BaseExceptionGroup("g", [ValueError("x"), BaseExceptionGroup("h", [ours])])
    assert first_error(group) is ours


def test_a_real_error_wins_over_cancellations() -> None:
    real = OSError("io")
    group = BaseExceptionGroup("g", [asyncio.CancelledError(), real])
    assert first_error(group) is real
    only = asyncio.CancelledError()
    assert first_error(BaseExceptionGroup("g", [only])) is only


def test_library_users_meet_an_asyncsync_error_but_never_a_wrapped_cancellation() -> None:
    wrapped = as_sync_error(KeyError("k"))
    assert isinstance(wrapped, AsyncSyncError) and "KeyError" in str(wrapped)
    ours = OutputError("x")
    assert as_sync_error(ours) is ours
    cancelled = asyncio.CancelledError()
    assert as_sync_error(cancelled) is cancelled
    interrupt = KeyboardInterrupt()
    assert as_sync_error(interrupt) is interrupt
