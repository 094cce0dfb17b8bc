"""Contender: a bare aiohttp multipart upload of prepared parts (the reference upload speed).

One ``aiohttp.ClientSession``, ``--concurrency`` uploads in flight, each part sent as an open
file in an ``aiohttp.FormData`` (aiohttp streams it), the envelope checked, no retries, no rate
limit, no journal; then the audience created with one JSON POST. The same event loop (uvloop)
as asyncsync's CLI.

    TIKTOK_ACCESS_TOKEN=... python bare_aiohttp.py --parts DIR --api-base URL \
        --advertiser-id ID --name NAME [--concurrency 8]

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import IO, Any

import aiohttp
from common import Part, main, upload_parts

UPLOAD = "/open_api/v1.3/dmp/custom_audience/file/upload/"
CREATE = "/open_api/v1.3/dmp/custom_audience/create/"


def open_file(path: Path) -> IO[bytes]:
    return path.open("rb")


async def post(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> dict[str, Any]:
    async with session.post(url, **kwargs) as answer:
        answer.raise_for_status()
        envelope: dict[str, Any] = await answer.json()
    if envelope.get("code") != 0:
        raise SystemExit(f"{url}: TikTok code {envelope.get('code')}: {envelope.get('message')}")
    data: dict[str, Any] = envelope["data"]
    return data


async def run(args: argparse.Namespace, token: str, manifest: dict[str, Any]) -> dict[str, Any]:
    ct = manifest["calculate_type"]
    parts = manifest["parts"]
    headers = {"Access-Token": token}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def upload(part: Part) -> str:
            path = args.parts / part["file"]
            handle = await asyncio.to_thread(open_file, path)
            with handle:
                form = aiohttp.FormData()
                form.add_field("advertiser_id", args.advertiser_id)
                form.add_field("file_signature", part["md5"])
                form.add_field("calculate_type", ct)
                form.add_field("file", handle, filename=path.name, content_type="text/plain")
                data = await post(session, args.api_base + UPLOAD, data=form)
            return str(data["file_path"])

        file_paths, upload_s = await upload_parts(parts, args.concurrency, upload)
        body = {
            "advertiser_id": args.advertiser_id,
            "custom_audience_name": args.name,
            "file_paths": file_paths,
            "calculate_type": ct,
        }
        created = await post(session, args.api_base + CREATE, json=body)
    return {
        "audience_id": str(created["custom_audience_id"]),
        "rows_written": sum(p["rows"] for p in parts),
        "parts": len(parts),
        "bytes_uploaded": sum(p["bytes"] for p in parts),
        "upload_s": upload_s,
    }


if __name__ == "__main__":
    main(__doc__, run)
