"""Contender: asyncsync's client uploading prepared parts, then creating the audience.

``TikTokClient`` with its defaults (retries, client-side rate limit, streamed multipart),
``--concurrency`` uploads in flight (a semaphore taken before each task is spawned), the MD5s
taken from ``PARTS/manifest.json``, then ``create_audience`` with every file_path.

    TIKTOK_ACCESS_TOKEN=... python asyncsync_upload.py --parts DIR --api-base URL \
        --advertiser-id ID --name NAME [--concurrency 4]

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import uvloop

from asyncsync.tiktok.client import TikTokClient


async def run(args: argparse.Namespace, token: str, manifest: dict[str, Any]) -> dict[str, Any]:
    ct = manifest["calculate_type"]
    parts = manifest["parts"]
    file_paths: list[str] = [""] * len(parts)
    async with TikTokClient(token, api_base=args.api_base) as client:
        sem = asyncio.Semaphore(args.concurrency)

        async def one(index: int, part: dict[str, Any]) -> None:
            try:
                uploaded = await client.upload_file(
                    args.advertiser_id, args.parts / part["file"], ct, md5=part["md5"]
                )
            finally:
                sem.release()
            file_paths[index] = uploaded.file_path

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for index, part in enumerate(parts):
                await sem.acquire()
                tg.create_task(one(index, part))
        upload_s = time.perf_counter() - start
        audience_id = await client.create_audience(args.advertiser_id, args.name, file_paths, ct)
        return {
            "audience_id": audience_id,
            "rows_written": sum(p["rows"] for p in parts),
            "parts": len(parts),
            "bytes_uploaded": client.stats.bytes_uploaded,
            "api_calls": client.stats.api_calls,
            "upload_s": upload_s,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=Path, required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--advertiser-id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    token = os.environ["TIKTOK_ACCESS_TOKEN"]
    manifest: dict[str, Any] = json.loads((args.parts / "manifest.json").read_text())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(run(args, token, manifest))))


if __name__ == "__main__":
    main()
