"""Builds the optional native hot loop (``asyncsync._native``); everything else is in pyproject.

Without a working C compiler (or Python's headers) the build of the extension fails, a warning
says so, and the install goes on: asyncsync then runs its pure-Python engine, which gives the
same output, slower. ``ASYNCSYNC_NO_NATIVE=1`` skips the build on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """``build_ext`` whose failure is a warning, not an error (as aiohttp, msgpack and PyYAML)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler or platform failure
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # any compiler or platform failure
            self._skip(exc)

    @staticmethod
    def _skip(exc: BaseException) -> None:
        print(
            f"WARNING: asyncsync's native engine was not built ({exc}); "
            "the pure-Python engine will be used.",
            file=sys.stderr,
        )


def extensions() -> list[Extension]:
    if os.environ.get("ASYNCSYNC_NO_NATIVE"):
        return []
    msvc = sys.platform == "win32"
    return [
        Extension(
            "asyncsync._native",
            sources=["asyncsync/native/module.c"],
            depends=[
                "asyncsync/native/md5.h",
                "asyncsync/native/md5x8.h",
                "asyncsync/native/rules.h",
                "asyncsync/native/sha256.h",
            ],
            extra_compile_args=[] if msvc else ["-O3", "-std=c99"],
        )
    ]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
