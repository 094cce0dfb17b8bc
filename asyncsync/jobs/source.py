"""Where a job's parts come from, behind one Protocol: the strategies ask a :class:`PartSource`
for the parts and never care whether they are being prepared or were prepared elsewhere.

:class:`PreparedInputs` runs :func:`~asyncsync.pipeline.prepare.prepare` on the job's inputs
(local files, stdin, Parquet datasets, URLs). :class:`DeliveredParts` hands over the parts of a
directory written by ``prepare`` elsewhere (``sync --prepared``), already checked against its
manifest by :func:`~asyncsync.pipeline.prepared.open_prepared` before the job starts.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from asyncsync.events import Reporter
from asyncsync.pipeline.parts import PartInfo
from asyncsync.pipeline.prepare import PrepareOptions, PrepareResult, prepare
from asyncsync.pipeline.prepared import PreparedDir

__all__ = ["DeliveredParts", "OnPart", "PartSource", "PreparedInputs"]

OnPart = Callable[[PartInfo], Awaitable[None]]


class PartSource(Protocol):
    """The parts of a job, with prepare's counts (:class:`PrepareResult`)."""

    async def parts(
        self, out_dir: Path, *, reporter: Reporter, on_part: OnPart | None = None
    ) -> PrepareResult:
        """Hand every part to ``on_part`` in index order as soon as it is final, and return the
        result with all of them. Parts this writes go into ``out_dir``; parts that already
        exist (a delivered directory's) stay where they are and are never deleted."""
        ...

    async def count(self, *, reporter: Reporter) -> PrepareResult:
        """The counts, part sizes and MD5s a real run would see (the dry run), keeping no file
        of its own on disk."""
        ...


class PreparedInputs:
    """Prepare the job's inputs into its work dir."""

    def __init__(self, inputs: tuple[str, ...], options: PrepareOptions) -> None:
        self.inputs = inputs
        self.options = options

    async def parts(
        self, out_dir: Path, *, reporter: Reporter, on_part: OnPart | None = None
    ) -> PrepareResult:
        return await prepare(
            *self.inputs, out_dir=out_dir, reporter=reporter, on_part=on_part, options=self.options
        )

    async def count(self, *, reporter: Reporter) -> PrepareResult:
        """Each part is deleted as soon as prepare hands it over, so a dry run holds at most the
        parts in flight on disk, whatever the input's size."""

        async def drop(part: PartInfo) -> None:
            await asyncio.to_thread(Path(part.path).unlink, True)

        with tempfile.TemporaryDirectory(prefix="asyncsync-plan-") as tmp:
            return await self.parts(Path(tmp), reporter=reporter, on_part=drop)


class DeliveredParts:
    """The verified parts of a prepared directory (local, or staged from object storage)."""

    def __init__(self, delivery: PreparedDir) -> None:
        self.delivery = delivery

    async def parts(
        self, out_dir: Path, *, reporter: Reporter, on_part: OnPart | None = None
    ) -> PrepareResult:
        del out_dir  # the parts are read where they are
        return await self.delivery.replay(reporter=reporter, on_part=on_part)

    async def count(self, *, reporter: Reporter) -> PrepareResult:
        return await self.delivery.replay(reporter=reporter)
