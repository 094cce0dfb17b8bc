"""The one bounded upload fan-out of a job: parts go to TikTok ``concurrency`` at a time, each
answer recorded in the journal before the part counts as uploaded.

A permit is taken before a task is spawned, so running and waiting uploads are both bounded
(``concurrency`` open files, whatever the number of parts). Parts come from an iterable (parts
on disk) or an async iterable (parts handed over by prepare while later ones are hashed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from asyncsync.errors import as_sync_error, first_error
from asyncsync.events import PartUploaded, Reporter, StageChanged
from asyncsync.store.journal import Journal
from asyncsync.tiktok.client import TikTokClient

__all__ = ["PartUpload", "Uploader"]


@dataclass(frozen=True, slots=True)
class PartUpload:
    """A part of a job to upload: its journal index, its file and the MD5 TikTok checks."""

    index: int
    path: Path
    md5: str


@dataclass(frozen=True, kw_only=True)
class Uploader:
    """Uploads the parts of journaled job ``job_id`` and records each file_path."""

    client: TikTokClient
    journal: Journal
    job_id: int
    advertiser_id: str
    calculate_type: str
    concurrency: int
    reporter: Reporter
    clock: Callable[[], float]

    async def upload(self, parts: Iterable[PartUpload] | AsyncIterable[PartUpload]) -> None:
        """Upload every part of ``parts``; raises the first failure as one AsyncSyncError."""
        sem = asyncio.Semaphore(self.concurrency)
        self.reporter(StageChanged(stage="upload", started=True))
        try:
            async with asyncio.TaskGroup() as tg:
                async for part in _aiter(parts):
                    await sem.acquire()
                    tg.create_task(self._one(part, sem))
        except BaseExceptionGroup as group:
            raise as_sync_error(first_error(group)) from group
        self.reporter(StageChanged(stage="upload", started=False))

    async def _one(self, part: PartUpload, sem: asyncio.Semaphore) -> None:
        try:
            uploaded = await self.client.upload_file(
                self.advertiser_id, part.path, self.calculate_type, md5=part.md5
            )
            self.journal.record_upload(
                self.job_id, part.index, uploaded.file_path, now=self.clock()
            )
            self.reporter(
                PartUploaded(
                    path=str(part.path), file_path=uploaded.file_path, bytes=uploaded.bytes
                )
            )
        finally:
            sem.release()


async def _aiter(
    parts: Iterable[PartUpload] | AsyncIterable[PartUpload],
) -> AsyncIterable[PartUpload]:
    if isinstance(parts, AsyncIterable):
        async for part in parts:
            yield part
    else:
        for part in parts:
            yield part
