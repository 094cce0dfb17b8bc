"""Fixtures: a started sandbox on a free loopback port with fast settings, a factory for other
settings, a token, raw API access, and the sandbox in its own process. What tests share besides
fixtures is in ``tests/helpers``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers.process import SandboxProcess
from helpers.process import sandbox_process as start_sandbox_process
from helpers.sandbox import RawApi, fast_config

from asyncsync.sandbox import FaultConfig, Sandbox


@pytest.fixture(autouse=True)
def short_reconcile_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI runs in the test process look for a create of unknown outcome for seconds."""
    monkeypatch.setenv("ASYNCSYNC_RECONCILE_WINDOW", "3")


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A started Sandbox (TikTok's limits, ``operation_seconds=0.05``, no faults)."""
    async with Sandbox(config=fast_config(), spool_dir=tmp_path / "sandbox-spool") as sb:
        yield sb


@pytest.fixture
def sandbox_factory(
    tmp_path: Path,
) -> Callable[..., AbstractAsyncContextManager[Sandbox]]:
    """Build a Sandbox with other settings: ``async with sandbox_factory(min_members=1) as sb``.

    Keyword arguments override :func:`fast_config`; ``faults=FaultConfig(...)`` sets faults.
    """

    def make(*, faults: FaultConfig | None = None, **overrides: Any) -> Sandbox:
        return Sandbox(
            config=fast_config(**overrides),
            spool_dir=tmp_path / "sandbox-spool",
            faults=faults,
        )

    return make


@pytest.fixture
def sandbox_token(sandbox: Sandbox) -> str:
    """An access token of ``sandbox`` valid for any advertiser."""
    return sandbox.issue_token()


@pytest.fixture
async def raw_api(sandbox: Sandbox) -> AsyncIterator[RawApi]:
    """Hand-built HTTP requests against ``sandbox`` with an any-advertiser token."""
    async with aiohttp.ClientSession() as session:
        yield RawApi(session, sandbox, sandbox.issue_token())


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
    """The sandbox in its own process (it outlives the jobs a test kills)."""
    with start_sandbox_process(tmp_path) as sb:
        yield sb
