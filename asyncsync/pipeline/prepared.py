"""Delivering a directory written by ``prepare`` elsewhere: read its manifest, verify its parts.

``asyncsync sync --prepared DIR_OR_URL`` uploads the parts listed in ``DIR/manifest.json``
instead of preparing inputs. :func:`open_prepared` checks every part against the manifest (size,
then MD5 of the whole file) before the sync job makes any request: a missing, truncated or
altered part is an ``InputError`` naming it (exit 2). A directory in object storage
(``s3://bucket/prefix/``...) is read through fsspec; its parts are downloaded into a staging
directory (MD5 computed while they arrive, a part already staged and intact is not fetched
again), since an upload needs a local file.

:meth:`PreparedDir.replay` reports and hands over the parts as
:func:`~asyncsync.pipeline.prepare.prepare` does, so the sync job takes it in place of the
prepare step: every part goes to ``on_part`` in index order, and the
job's journal makes a rerun skip the parts already uploaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from asyncsync.errors import InputError, StateError, UsageError
from asyncsync.events import Reporter, StageChanged, null_reporter
from asyncsync.pipeline.parts import TMP_SUFFIX, PartInfo
from asyncsync.pipeline.prepare import (
    MANIFEST_NAME,
    PrepareOptions,
    PrepareResult,
    read_manifest,
)
from asyncsync.remote import RemoteObject, RemoteStream, display_name, is_remote
from asyncsync.rules.limits import HashAlgo, IdType

__all__ = ["PreparedDir", "open_prepared"]

_PART_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(txt|csv)$")
_READ_BYTES: Final = 4 << 20


@dataclass(frozen=True, slots=True)
class PreparedDir:
    """A verified prepared directory: its manifest, and local files for every part."""

    source: str
    """The directory or URL as shown (a URL without user info or query)."""
    result: PrepareResult
    """The manifest, with each part's ``path`` pointing at a verified local file."""
    manifest_md5: str

    @property
    def options(self) -> PrepareOptions:
        """The prepare options recorded in the manifest (id type, hash, part size)."""
        recorded = self.result.options
        fields: dict[str, Any] = {}
        if "id_type" in recorded:
            fields["id_type"] = IdType(str(recorded["id_type"]))
        if "hash" in recorded:
            fields["hash_algo"] = HashAlgo(str(recorded["hash"]))
        if "max_file_bytes" in recorded:
            fields["max_file_bytes"] = int(str(recorded["max_file_bytes"]))
        try:
            return PrepareOptions(**fields)
        except UsageError as exc:
            raise InputError(f"{self.source}: manifest options: {exc}", path=self.source) from None

    @property
    def bytes(self) -> int:
        """The parts' total size."""
        return sum(p.bytes for p in self.result.parts)

    async def replay(
        self,
        *,
        reporter: Reporter = null_reporter,
        on_part: Callable[[PartInfo], Awaitable[None]] | None = None,
    ) -> PrepareResult:
        """Hand every part to ``on_part`` in index order, as ``prepare`` does; write nothing."""
        reporter(StageChanged(stage="prepare", started=True))
        for part in self.result.parts:
            reporter(part.written())
            if on_part is not None:
                await on_part(part)
        reporter(StageChanged(stage="prepare", started=False))
        return self.result


def _md5_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _check_names(source: str, result: PrepareResult) -> None:
    if not result.parts:
        raise InputError(f"{source}: the manifest lists no part", path=source)
    for part in result.parts:
        if not _PART_NAME.match(part.file):
            raise InputError(
                f"{source}: manifest part {part.file!r} is not a plain .txt/.csv file name",
                path=source,
            )


def _mismatch(source: str, part: PartInfo, what: str) -> InputError:
    return InputError(
        f"{source}: part {part.file} {what}; it is not the file the manifest describes "
        "(prepare again, or copy the directory whole)",
        path=f"{source}/{part.file}",
    )


def _verify_local(source: str, part: PartInfo) -> None:
    try:
        size = part.path.stat().st_size
    except FileNotFoundError:
        raise _mismatch(source, part, "is missing") from None
    except OSError as exc:
        raise _mismatch(source, part, f"cannot be read ({exc.strerror or exc})") from None
    if size != part.bytes:
        raise _mismatch(source, part, f"has {size} bytes, the manifest says {part.bytes}")
    if _md5_file(part.path) != part.md5:
        raise _mismatch(source, part, f"has another MD5 than the manifest's {part.md5}")


def _open_local(directory: str) -> PreparedDir:
    try:
        result = read_manifest(directory)
    except StateError as exc:
        raise InputError(str(exc), path=directory) from None
    manifest_md5 = _md5_file(result.manifest_path)
    _check_names(directory, result)
    for part in result.parts:
        _verify_local(directory, part)
    return PreparedDir(source=directory, result=result, manifest_md5=manifest_md5)


def _download(source: str, obj: RemoteObject, part: PartInfo, dest: Path) -> None:
    """Fetch ``obj`` into ``dest`` (via a temporary name), checking size and MD5 on the way."""
    if dest.exists() and dest.stat().st_size == part.bytes and _md5_file(dest) == part.md5:
        return
    if obj.size is not None and obj.size != part.bytes:
        raise _mismatch(source, part, f"has {obj.size} bytes, the manifest says {part.bytes}")
    tmp = dest.with_name(dest.name + TMP_SUFFIX)
    h = hashlib.md5(usedforsecurity=False)
    size = 0
    stream = RemoteStream(obj)
    try:
        with tmp.open("wb") as out:
            while block := stream.read(_READ_BYTES):
                h.update(block)
                out.write(block)
                size += len(block)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"{source}: part {part.file}: cannot read it ({exc})", path=source
        ) from None
    finally:
        stream.close()
    if size != part.bytes:
        tmp.unlink(missing_ok=True)
        raise _mismatch(source, part, f"has {size} bytes, the manifest says {part.bytes}")
    if h.hexdigest() != part.md5:
        tmp.unlink(missing_ok=True)
        raise _mismatch(source, part, f"has another MD5 than the manifest's {part.md5}")
    os.replace(tmp, dest)


def _open_remote(url: str, stage_root: Path) -> PreparedDir:
    base = url.split("?", 1)[0].rstrip("/")
    source = display_name(base)
    manifest_obj = RemoteObject.lookup(f"{base}/{MANIFEST_NAME}")
    stream = RemoteStream(manifest_obj)
    try:
        raw = stream.read()
    except OSError as exc:
        raise InputError(f"{source}: cannot read its manifest ({exc})", path=source) from None
    finally:
        stream.close()
    manifest_md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    stage = stage_root / hashlib.sha256(source.encode()).hexdigest()[:16]
    stage.mkdir(parents=True, exist_ok=True, mode=0o700)
    (stage / MANIFEST_NAME).write_bytes(raw)
    try:
        json.loads(raw)
        staged = read_manifest(stage)
    except (StateError, ValueError) as exc:
        raise InputError(f"{source}: unreadable manifest ({exc})", path=source) from None
    _check_names(source, staged)
    for part in staged.parts:
        _download(source, RemoteObject.lookup(f"{base}/{part.file}"), part, part.path)
    return PreparedDir(source=source, result=staged, manifest_md5=manifest_md5)


def open_prepared(directory: str | os.PathLike[str], *, stage_root: Path) -> PreparedDir:
    """Read and verify the prepared directory (blocking: run on a thread).

    ``directory``: a local directory or a URL (``s3://``, ``gs://``, ``az://``, ``https://``)
    holding ``manifest.json`` and its parts. ``stage_root``: where a remote directory's parts
    are downloaded (one subdirectory per URL). Raises ``InputError`` (exit 2) for a missing or
    unreadable manifest and for any part whose size or MD5 differs from the manifest's.
    """
    text = os.fspath(directory)
    if is_remote(text):
        return _open_remote(text, stage_root)
    return _open_local(text)
