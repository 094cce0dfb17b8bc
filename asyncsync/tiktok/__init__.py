"""The async TikTok Business API client: wire format, retries, rate limit, ``TikTokClient``."""

from __future__ import annotations

from asyncsync.tiktok.client import ClientState, ClientStats, TikTokClient
from asyncsync.tiktok.ratelimit import TokenBucket
from asyncsync.tiktok.retry import RetryPolicy, testing
from asyncsync.tiktok.wire import AccessToken, Audience, AudienceHistory, UploadedFile

__all__ = [
    "AccessToken",
    "Audience",
    "AudienceHistory",
    "ClientState",
    "ClientStats",
    "RetryPolicy",
    "TikTokClient",
    "TokenBucket",
    "UploadedFile",
    "testing",
]
