"""Contender: the official TikTok SDK (``business_api_client``) uploading prepared parts.

Uploads every part listed in ``PARTS/manifest.json`` with ``dmp_custom_audience_file_upload``
through the SDK's own thread pool (``async_req=True``), then creates the audience with
``dmp_custom_audience_create``. Only ``Configuration().host`` is changed (to the sandbox). The
SDK reads each file whole into memory to build the multipart body.

The SDK's pool has one thread per core and no setting to change that; ``--threads N`` swaps the
pool for one of N threads (reaching into the SDK's ``ApiClient.pool``), to show what matching
asyncsync's uploads in flight would cost in memory.

    TIKTOK_ACCESS_TOKEN=... python sdk_upload.py --parts DIR --api-base URL \
        --advertiser-id ID --name NAME [--threads N]

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import business_api_client  # type: ignore[import-untyped]


def file_path(answer: Any) -> str:
    """The file_path of an ``async_req`` upload's answer (a model the SDK does not check)."""
    if answer.code != 0:
        raise SystemExit(f"upload: TikTok code {answer.code}: {answer.message}")
    data = answer.data
    return str(data["file_path"] if isinstance(data, dict) else data.file_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=Path, required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--advertiser-id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=None, help="Swap the SDK's pool.")
    args = parser.parse_args()
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    token = os.environ["TIKTOK_ACCESS_TOKEN"]
    manifest: dict[str, Any] = json.loads((args.parts / "manifest.json").read_text())
    ct = manifest["calculate_type"]

    config = business_api_client.Configuration()
    config.host = args.api_base
    api_client = business_api_client.ApiClient(config)
    if args.threads is not None:
        api_client.pool.close()
        api_client.pool.join()
        api_client.pool = ThreadPool(args.threads)
    api = business_api_client.AudienceApi(api_client)
    start = time.perf_counter()
    pending = [
        api.dmp_custom_audience_file_upload(
            token,
            advertiser_id=args.advertiser_id,
            calculate_type=ct,
            file=str(args.parts / part["file"]),
            file_signature=part["md5"],
            async_req=True,
        )
        for part in manifest["parts"]
    ]
    file_paths = [file_path(p.get()) for p in pending]
    upload_s = time.perf_counter() - start
    created = api.dmp_custom_audience_create(
        token,
        body=business_api_client.CustomAudienceCreateBody(
            advertiser_id=args.advertiser_id,
            custom_audience_name=args.name,
            file_paths=file_paths,
            calculate_type=ct,
        ),
    )
    print(
        json.dumps(
            {
                "audience_id": str(created["data"]["custom_audience_id"]),
                "rows_written": sum(p["rows"] for p in manifest["parts"]),
                "parts": len(file_paths),
                "bytes_uploaded": sum(p["bytes"] for p in manifest["parts"]),
                "upload_s": upload_s,
                "threads": api_client.pool._processes,
            }
        )
    )
    api_client.pool.close()
    api_client.pool.join()


if __name__ == "__main__":
    main()
