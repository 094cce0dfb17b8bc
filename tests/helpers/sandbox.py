"""An in-process sandbox for tests: fast settings, raw API calls, a client and the options of
``sync_audience`` that tests share."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from asyncsync.rules.limits import API_VERSION_PREFIX
from asyncsync.sandbox import Sandbox, SandboxConfig
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.retry import RetryPolicy
from helpers.api import ADVERTISER
from helpers.ids import DIGEST_LINE, digest_file

FAST_OPERATION_SECONDS = 0.05
"""How long an audience operation "runs" in the ``sandbox`` fixture (sandbox clock seconds)."""


def fast_config(**overrides: Any) -> SandboxConfig:
    """Sandbox settings for tests: TikTok's limits, operations that finish in 50 ms, seed 1."""
    values: dict[str, Any] = {"operation_seconds": FAST_OPERATION_SECONDS, "seed": 1}
    values.update(overrides)
    return SandboxConfig(**values)


class RawApi:
    """Raw wire access to a sandbox for its own tests (hand-built requests, no client code)."""

    def __init__(self, session: aiohttp.ClientSession, sandbox: Sandbox, token: str) -> None:
        self.session = session
        self.sandbox = sandbox
        self.token = token

    def url(self, path: str) -> str:
        return f"{self.sandbox.api_base}{API_VERSION_PREFIX}{path}"

    def headers(self, token: str | None) -> dict[str, str]:
        value = self.token if token is None else token
        return {"Access-Token": value} if value else {}

    async def _envelope(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        assert set(body) == {"code", "message", "data", "request_id"}, body
        return body

    async def post(
        self, path: str, payload: dict[str, Any], *, token: str | None = None
    ) -> dict[str, Any]:
        async with self.session.post(
            self.url(path), json=payload, headers=self.headers(token)
        ) as response:
            return await self._envelope(response)

    async def get(self, path: str, params: Any, *, token: str | None = None) -> dict[str, Any]:
        async with self.session.get(
            self.url(path), params=params, headers=self.headers(token)
        ) as response:
            return await self._envelope(response)

    async def upload(
        self,
        content: bytes,
        *,
        advertiser_id: str = ADVERTISER,
        filename: str = "ids.csv",
        calculate_type: str = "FIRST_SHA256",
        signature: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("advertiser_id", advertiser_id)
        form.add_field("calculate_type", calculate_type)
        form.add_field(
            "file_signature", hashlib.md5(content).hexdigest() if signature is None else signature
        )
        form.add_field("file", io.BytesIO(content), filename=filename, content_type="text/csv")
        async with self.session.post(
            self.url("/dmp/custom_audience/file/upload/"), data=form, headers=self.headers(token)
        ) as response:
            return await self._envelope(response)

    async def upload_path(self, digests: list[str], **kwargs: Any) -> str:
        answer = await self.upload(digest_file(digests), **kwargs)
        assert answer["code"] == 0, answer
        path: str = answer["data"]["file_path"]
        return path

    async def create(
        self,
        file_paths: list[str],
        *,
        name: str = "audience",
        calculate_type: str = "FIRST_SHA256",
        advertiser_id: str = ADVERTISER,
        **extra: Any,
    ) -> dict[str, Any]:
        payload = {
            "advertiser_id": advertiser_id,
            "custom_audience_name": name,
            "file_paths": file_paths,
            "calculate_type": calculate_type,
            **extra,
        }
        return await self.post("/dmp/custom_audience/create/", payload)

    async def create_id(self, digests: list[str], **kwargs: Any) -> str:
        answer = await self.create([await self.upload_path(digests)], **kwargs)
        assert answer["code"] == 0, answer
        audience_id: str = answer["data"]["custom_audience_id"]
        return audience_id

    async def update(self, audience_id: str, **fields: Any) -> dict[str, Any]:
        payload = {"advertiser_id": ADVERTISER, "custom_audience_id": audience_id, **fields}
        return await self.post("/dmp/custom_audience/update/", payload)

    async def details(self, audience_id: str, history_size: int = 10) -> dict[str, Any]:
        answer = await self.get(
            "/dmp/custom_audience/get/",
            {
                "advertiser_id": ADVERTISER,
                "custom_audience_ids": json.dumps([audience_id]),
                "history_size": str(history_size),
            },
        )
        assert answer["code"] == 0, answer
        (entry,) = answer["data"]["list"]
        return dict(entry)

    async def wait_idle(self, audience_id: str) -> dict[str, Any]:
        """Poll ``get`` until the audience's running operation is over."""
        for _ in range(200):
            entry = await self.details(audience_id)
            if entry["audience_details"]["is_valid"]:
                return entry
            await asyncio.sleep(0.01)
        raise AssertionError(f"audience {audience_id} stayed busy")


@asynccontextmanager
async def client_for(sandbox: Sandbox, *, attempts: int = 8) -> AsyncIterator[TikTokClient]:
    """A client of ``sandbox``: any-advertiser token, retries without waits, no rate limit."""
    async with TikTokClient(
        sandbox.issue_token(),
        api_base=sandbox.api_base,
        retry=RetryPolicy(attempts=attempts, wait=False),
        requests_per_second=None,
    ) as client:
        yield client


def sync_options(tmp_path: Path, sandbox: Sandbox, **extra: Any) -> dict[str, Any]:
    """Keyword arguments of ``sync_audience`` for tests (sandbox clock, fast polls, one worker,
    parts of 200 lines), with ``extra`` added or overriding."""
    values: dict[str, Any] = {
        "advertiser_id": ADVERTISER,
        "state_dir": tmp_path / "state",
        "clock": sandbox.clock.now,
        "poll_interval": 0.01,
        "max_wait": 30.0,
        "workers": 1,
        "max_file_bytes": 200 * DIGEST_LINE,
        "reconcile_window": 2.0,
    }
    values.update(extra)
    return values
