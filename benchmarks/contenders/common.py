"""What the asyncio upload contenders share: their command line and the bounded upload loop.

``asyncsync_upload.py`` and ``bare_aiohttp.py`` are run as scripts, so their folder is first on
``sys.path`` and they import this module as ``common``. Each supplies only how one part is
uploaded and how the audience is created; the options, the manifest, the event loop (uvloop),
the concurrency bound and the timing are the same for both, so their figures compare like with
like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

Part = dict[str, Any]
"""One entry of ``manifest["parts"]``: ``file``, ``bytes``, ``rows``, ``md5``."""

Run = Callable[[argparse.Namespace, str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]
"""A contender's job: (options, access token, manifest) -> the JSON object it prints."""


async def upload_parts(
    parts: list[Part], concurrency: int, upload: Callable[[Part], Awaitable[str]]
) -> tuple[list[str], float]:
    """Upload every part with ``upload`` (which returns its file_path), ``concurrency`` at most
    in flight: a permit is taken before each task is spawned, so waiting parts hold no task.

    Returns the file_paths in part order and the wall seconds the uploads took.
    """
    file_paths: list[str] = [""] * len(parts)
    sem = asyncio.Semaphore(concurrency)

    async def one(index: int, part: Part) -> None:
        try:
            file_path = await upload(part)
        finally:
            sem.release()
        file_paths[index] = file_path

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for index, part in enumerate(parts):
            await sem.acquire()
            tg.create_task(one(index, part))
    return file_paths, time.perf_counter() - start


def main(doc: str | None, run: Run) -> None:
    """Parse the shared options (the usage line is the first line of ``doc``), read the token
    from ``TIKTOK_ACCESS_TOKEN`` and ``PARTS/manifest.json``, run ``run`` on uvloop and print
    its result as one JSON object on stdout."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--parts", type=Path, required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--advertiser-id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    token = os.environ["TIKTOK_ACCESS_TOKEN"]
    manifest: dict[str, Any] = json.loads((args.parts / "manifest.json").read_text())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(run(args, token, manifest))))
