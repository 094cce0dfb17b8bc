"""The prepare pipeline: read, normalize + hash (process pool), dedupe, write capped parts."""

from __future__ import annotations

from asyncsync.pipeline.parts import PartInfo
from asyncsync.pipeline.prepare import (
    MANIFEST_NAME,
    PrepareOptions,
    PrepareResult,
    RejectedLine,
    prepare,
    read_manifest,
)

__all__ = [
    "MANIFEST_NAME",
    "PartInfo",
    "PrepareOptions",
    "PrepareResult",
    "RejectedLine",
    "prepare",
    "read_manifest",
]
