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
from asyncsync.rules.limits import Action, CalculateType, HashAlgo, IdType

try:
    __version__ = version("asyncsync")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Action",
    "AsyncSyncError",
    "AuthError",
    "CalculateType",
    "HashAlgo",
    "IdType",
    "InputError",
    "Paused",
    "TikTokError",
    "UsageError",
    "__version__",
]
