"""Contender: a bare aiohttp multipart upload of prepared parts (the reference upload speed).

One ``aiohttp.ClientSession``, ``--concurrency`` uploads in flight, each part sent as an open
file in an ``aiohttp.FormData`` (aiohttp streams it), the envelope checked, no retries, no rate
limit, no journal; then the audience created with one JSON POST. The same event loop (uvloop)
as asyncsync's CLI.

    TIKTOK_ACCESS_TOKEN=... python bare_aiohttp.py --parts DIR --api-base URL \
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
from typing import IO, Any

import aiohttp
import uvloop

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
    file_paths: list[str] = [""] * len(parts)
    headers = {"Access-Token": token}
    async with aiohttp.ClientSession(headers=headers) as session:
        sem = asyncio.Semaphore(args.concurrency)

        async def one(index: int, part: dict[str, Any]) -> None:
            try:
                path = args.parts / part["file"]
                handle = await asyncio.to_thread(open_file, path)
                with handle:
                    form = aiohttp.FormData()
                    form.add_field("advertiser_id", args.advertiser_id)
                    form.add_field("file_signature", part["md5"])
                    form.add_field("calculate_type", ct)
                    form.add_field("file", handle, filename=path.name, content_type="text/plain")
                    data = await post(session, args.api_base + UPLOAD, data=form)
            finally:
                sem.release()
            file_paths[index] = str(data["file_path"])

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for index, part in enumerate(parts):
                await sem.acquire()
                tg.create_task(one(index, part))
        upload_s = time.perf_counter() - start
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
