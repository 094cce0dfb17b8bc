"""Where a job's parts come from, behind one Protocol: the strategies ask a :class:`PartSource`
for the parts and never care whether they are being prepared or were prepared elsewhere.

:class:`PreparedInputs` runs :func:`~asyncsync.pipeline.prepare.prepare` on the job's inputs
(local files, stdin, Parquet datasets, URLs). :class:`DeliveredParts` hands over the parts of a
directory written by ``prepare`` elsewhere (``sync --prepared``), already checked against its
manifest by :func:`~asyncsync.pipeline.prepared.open_prepared` before the job starts.

A dry run asks :meth:`PartSource.count` instead: the inputs are counted by prepare's counting
mode (no part file written), a delivered directory answers from its verified manifest. Neither
deletes anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from asyncsync.errors import UsageError
from asyncsync.events import Reporter
from asyncsync.pipeline.parts import PartInfo
from asyncsync.pipeline.prepare import PrepareCount, PrepareOptions, PrepareResult, count, prepare
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

    async def count(
        self, work_dir: Path, *, reporter: Reporter, unique_dir: Path | None = None
    ) -> PrepareCount | PrepareResult:
        """The counts and the parts (index, file name, rows, bytes) a real run would see (the
        dry run), writing no part file and deleting none. ``work_dir``: where a counting pass
        may keep temporary files (removed before this returns). ``unique_dir``: also keep the
        export's sorted unique binary digests there (:attr:`PrepareCount.unique_runs`; the
        caller removes them), for a mirror's dry run."""
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

    async def count(
        self, work_dir: Path, *, reporter: Reporter, unique_dir: Path | None = None
    ) -> PrepareCount:
        """prepare's counting mode (:func:`~asyncsync.pipeline.prepare.count`): the same
        hashing and exact dedupe, the parts planned from the unique count, no part written."""
        return await count(
            *self.inputs,
            work_dir=work_dir,
            reporter=reporter,
            options=self.options,
            unique_dir=unique_dir,
        )


class DeliveredParts:
    """The verified parts of a prepared directory (local, or staged from object storage)."""

    def __init__(self, delivery: PreparedDir) -> None:
        self.delivery = delivery

    async def parts(
        self, out_dir: Path, *, reporter: Reporter, on_part: OnPart | None = None
    ) -> PrepareResult:
        del out_dir  # the parts are read where they are
        return await self.delivery.replay(reporter=reporter, on_part=on_part)

    async def count(
        self, work_dir: Path, *, reporter: Reporter, unique_dir: Path | None = None
    ) -> PrepareResult:
        """The verified manifest's counts and parts: nothing is read again, written or
        deleted (the directory is the user's)."""
        del work_dir
        if unique_dir is not None:
            # JobSpec.check_source refuses to mirror a prepared directory before this.
            raise UsageError("a prepared directory cannot be mirrored")
        return await self.delivery.replay(reporter=reporter)
