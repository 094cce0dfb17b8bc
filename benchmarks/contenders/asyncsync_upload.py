"""Contender: asyncsync's client uploading prepared parts, then creating the audience.

``TikTokClient`` with its defaults (retries, client-side rate limit, streamed multipart),
``--concurrency`` uploads in flight (a semaphore taken before each task is spawned), the MD5s
taken from ``PARTS/manifest.json``, then ``create_audience`` with every file_path.

    TIKTOK_ACCESS_TOKEN=... python asyncsync_upload.py --parts DIR --api-base URL \
        --advertiser-id ID --name NAME [--concurrency 8]

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import Part, main, upload_parts

from asyncsync.tiktok.client import TikTokClient


async def run(args: argparse.Namespace, token: str, manifest: dict[str, Any]) -> dict[str, Any]:
    ct = manifest["calculate_type"]
    parts = manifest["parts"]
    async with TikTokClient(token, api_base=args.api_base) as client:

        async def upload(part: Part) -> str:
            uploaded = await client.upload_file(
                args.advertiser_id, args.parts / part["file"], ct, md5=part["md5"]
            )
            return uploaded.file_path

        file_paths, upload_s = await upload_parts(parts, args.concurrency, upload)
        audience_id = await client.create_audience(args.advertiser_id, args.name, file_paths, ct)
        return {
            "audience_id": audience_id,
            "rows_written": sum(p["rows"] for p in parts),
            "parts": len(parts),
            "bytes_uploaded": client.stats.bytes_uploaded,
            "api_calls": client.stats.api_calls,
            "upload_s": upload_s,
        }


if __name__ == "__main__":
    main(__doc__, run)
