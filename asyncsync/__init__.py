"""asyncsync: stream very large ID exports into TikTok custom audiences, fast and exactly once.

The public names below are imported on first use (PEP 562), so that ``import asyncsync`` and
every CLI start (and every hashing worker) stay cheap: the HTTP client, the sandbox's web server
and the sync job load only when a program touches them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from asyncsync.errors import (
    AsyncSyncError,
    AuthError,
    InputError,
    Paused,
    TikTokError,
    UsageError,
)
from asyncsync.rules.limits import Action, CalculateType, HashAlgo, IdType

if TYPE_CHECKING:
    from asyncsync.jobs import SyncResult, sync_audience
    from asyncsync.pipeline import PartInfo, PrepareOptions, PrepareResult, prepare
    from asyncsync.sandbox import FaultConfig, Sandbox, SandboxConfig
    from asyncsync.tiktok import (
        AccessToken,
        Audience,
        AudienceHistory,
        ClientStats,
        RetryPolicy,
        TikTokClient,
        UploadedFile,
    )

_LAZY: dict[str, str] = {
    "AccessToken": "asyncsync.tiktok",
    "Audience": "asyncsync.tiktok",
    "AudienceHistory": "asyncsync.tiktok",
    "ClientStats": "asyncsync.tiktok",
    "FaultConfig": "asyncsync.sandbox",
    "PartInfo": "asyncsync.pipeline",
    "PrepareOptions": "asyncsync.pipeline",
    "PrepareResult": "asyncsync.pipeline",
    "RetryPolicy": "asyncsync.tiktok",
    "Sandbox": "asyncsync.sandbox",
    "SandboxConfig": "asyncsync.sandbox",
    "SyncResult": "asyncsync.jobs",
    "TikTokClient": "asyncsync.tiktok",
    "UploadedFile": "asyncsync.tiktok",
    "prepare": "asyncsync.pipeline",
    "sync_audience": "asyncsync.jobs",
}


def _version() -> str:
    # importlib.metadata takes about 50 ms to import: paid only by who asks for the version.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("asyncsync")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncsync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"__version__"})


__all__ = [
    "AccessToken",
    "Action",
    "AsyncSyncError",
    "Audience",
    "AudienceHistory",
    "AuthError",
    "CalculateType",
    "ClientStats",
    "FaultConfig",
    "HashAlgo",
    "IdType",
    "InputError",
    "PartInfo",
    "Paused",
    "PrepareOptions",
    "PrepareResult",
    "RetryPolicy",
    "Sandbox",
    "SandboxConfig",
    "SyncResult",
    "TikTokClient",
    "TikTokError",
    "UploadedFile",
    "UsageError",
    "__version__",
    "prepare",
    "sync_audience",
]
