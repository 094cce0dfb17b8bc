"""What an input name points at (a remote URL, a Parquet dataset), decided without loading any
reader: no numpy, no pyarrow, no fsspec. The command line decides it before its heavy imports
(:mod:`asyncsync.forkserver`); the readers in :mod:`asyncsync.pipeline` use the same rules."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Final

__all__ = [
    "PARQUET_MAGIC",
    "PARQUET_SUFFIXES",
    "REMOTE_SCHEMES",
    "has_glob",
    "has_parquet_suffix",
    "is_parquet",
    "is_remote",
    "object_inputs",
]

REMOTE_SCHEMES: Final = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "http": None,
    "https": None,
}
"""URL schemes read through fsspec, with the asyncsync extra that brings their backend."""

PARQUET_MAGIC: Final = b"PAR1"
PARQUET_SUFFIXES: Final = (".parquet", ".parq", ".pq")
_URL: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB_CHARS: Final = frozenset("*?[")


def is_remote(name: str) -> bool:
    """Whether ``name`` is a URL of a scheme read through fsspec."""
    match = _URL.match(name)
    return match is not None and match.group(1).lower() in REMOTE_SCHEMES


def has_glob(name: str) -> bool:
    return any(c in _GLOB_CHARS for c in name)


def has_parquet_suffix(name: str) -> bool:
    """Whether ``name`` (a path or URL, a trailing ``/`` ignored) ends in a Parquet suffix."""
    return name.lower().rstrip("/").endswith(PARQUET_SUFFIXES)


def is_parquet(name: str) -> bool:
    """Whether ``name`` is read as a Parquet dataset: a ``.parquet`` (``.parq``, ``.pq``) file,
    a local directory, a glob, a URL ending in ``/``, or a local file starting with ``PAR1``."""
    if name == "-":
        return False
    if has_parquet_suffix(name) or has_glob(name):
        return True
    if is_remote(name):
        return name.split("?", 1)[0].endswith("/")
    if os.path.isdir(name):
        return True
    if not os.path.isfile(name):  # a pipe's first bytes must stay for the text reader
        return False
    try:
        with open(name, "rb") as f:
            return f.read(4) == PARQUET_MAGIC
    except OSError:
        return False


def object_inputs(args: Sequence[str]) -> list[str]:
    """The words of a command's arguments, not yet parsed, that name one object in a store to
    read (the command line looks them up ahead: :func:`asyncsync.remote.look_ahead`). A guess:
    a remote URL that is not a Parquet name, a glob or a prefix ending in ``/`` (those are
    listed, not read as one object); after an option, which may take it as its value
    (``--api-base``), only an object store's URL (``s3://``, ``gs://``, ``az://``...), never
    an ``http(s)://`` one. A wrong guess costs a request, never correctness."""

    def one_object(i: int, word: str) -> bool:
        if not is_remote(word) or has_parquet_suffix(word) or has_glob(word):
            return False
        if word.endswith("/"):
            return False
        after_option = i > 0 and args[i - 1].startswith("-")
        return not after_option or not word.lower().startswith(("http://", "https://"))

    return [word for i, word in enumerate(args) if one_object(i, word)]
