"""asyncsync: stream very large ID exports into TikTok custom audiences, fast and exactly once."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from asyncsync.errors import (
    AsyncSyncError,
    AuthError,
    InputError,
    Paused,
    TikTokError,
    UsageError,
)
from asyncsync.pipeline import PartInfo, PrepareOptions, PrepareResult, prepare
from asyncsync.rules.limits import Action, CalculateType, HashAlgo, IdType
from asyncsync.sandbox import FaultConfig, Sandbox, SandboxConfig
from asyncsync.sync import SyncResult, sync_audience
from asyncsync.tiktok import (
    AccessToken,
    Audience,
    AudienceHistory,
    ClientStats,
    RetryPolicy,
    TikTokClient,
    UploadedFile,
)

try:
    __version__ = version("asyncsync")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

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
