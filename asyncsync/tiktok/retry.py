"""Retry policy: exponential backoff with full jitter, bounded in attempts and in total time.

Tests turn the waiting off instead of patching ``asyncio.sleep``, either per policy
(``RetryPolicy(wait=False)``) or for everything inside a block::

    with asyncsync.tiktok.retry.testing():          # no waits, same attempts
        ...
    with asyncsync.tiktok.retry.testing(attempts=2):
        ...
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["RetryPolicy", "testing"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a failed request is tried again.

    ``attempts``: tries in all, the first included (>= 1). The wait before try ``n + 1`` is drawn
    uniformly from ``[0, min(max_delay, initial_delay * multiplier ** (n - 1))]`` seconds ("full
    jitter"), so that many clients backing off together do not come back in step.
    ``total_timeout``: no retry is scheduled to start later than this many seconds after the
    first try began (``None``: no bound but ``attempts``). ``wait=False`` keeps the attempts and
    skips the waits (for tests). Holds no memory beyond its fields.

    ``outage``: a request that could not reach the server at all (connection refused, no route,
    no connection within the timeout: nothing was sent) is tried again for this many seconds
    after the first try began, whatever ``attempts`` and ``total_timeout`` say, waiting at most
    ``outage_delay`` seconds between tries: a short outage of the API (a restart, a network
    blip) is ridden out instead of failing the job. Without waits (``wait=False``) only
    ``attempts`` bounds it.
    """

    attempts: int = 8
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    total_timeout: float | None = 300.0
    wait: bool = True
    outage: float = 120.0
    outage_delay: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"attempts must be an integer, got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("initial_delay and max_delay must not be negative")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        if self.outage < 0 or self.outage_delay < 0:
            raise ValueError("outage and outage_delay must not be negative")
        if self.total_timeout is not None and self.total_timeout <= 0:
            raise ValueError(f"total_timeout must be positive, got {self.total_timeout}")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed try ``attempt`` (1-based), with full jitter; 0 if not waiting."""
        if not self.wait:
            return 0.0
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling)

    async def sleep(self, delay: float) -> None:
        if self.wait and delay > 0:
            await asyncio.sleep(delay)

    def effective(self) -> RetryPolicy:
        """This policy with the overrides of an enclosing :func:`testing` block applied."""
        if not _overrides:
            return self
        override = _overrides[-1]
        return dataclasses.replace(
            self,
            wait=override.wait,
            attempts=self.attempts if override.attempts is None else override.attempts,
        )


@dataclass(frozen=True, slots=True, eq=False)
class _Override:
    wait: bool
    attempts: int | None


_overrides: list[_Override] = []


@contextmanager
def testing(*, wait: bool = False, attempts: int | None = None) -> Iterator[None]:
    """Within the block every policy skips its waits (and tries ``attempts`` times if given).

    Process-wide, like stamina's testing mode: meant for test suites, not for production code.
    """
    override = _Override(wait=wait, attempts=attempts)
    _overrides.append(override)
    try:
        yield
    finally:
        _overrides.remove(override)
