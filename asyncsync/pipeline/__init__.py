"""The prepare pipeline: read, normalize + hash (process pool), dedupe, write capped parts
(or, for a dry run, only count them)."""

from __future__ import annotations

from asyncsync.pipeline.parts import PartInfo
from asyncsync.pipeline.prepare import (
    MANIFEST_NAME,
    PrepareCount,
    PrepareOptions,
    PrepareResult,
    RejectedLine,
    count,
    prepare,
    read_manifest,
)

__all__ = [
    "MANIFEST_NAME",
    "PartInfo",
    "PrepareCount",
    "PrepareOptions",
    "PrepareResult",
    "RejectedLine",
    "count",
    "prepare",
    "read_manifest",
]
