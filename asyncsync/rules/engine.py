"""Which engine runs the chunk hasher: the native hot loop, or the pure-Python reference.

The native engine is the C extension ``asyncsync._native``, built at install time when a C
compiler is there (``setup.py``); the Python engine is :mod:`asyncsync.rules.hashing`'s numpy
and per-line code over :mod:`asyncsync.rules.ids`. Both give the same digests, counts, samples
and parts, byte for byte (``tests/test_native_engine.py``).

``ASYNCSYNC_ENGINE`` chooses: ``auto`` (the default: native when built), ``python`` (the
reference, always available), ``native`` (the native engine or an error). Read once per
process; pool workers inherit it through their environment.

Importing this module is cheap (no numpy): ``asyncsync --version`` reports the engine.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from types import ModuleType
from typing import Final, Literal

__all__ = [
    "ENGINE_ENV",
    "Engine",
    "active_engine",
    "describe_engine",
    "native_for",
    "native_module",
]

ENGINE_ENV: Final = "ASYNCSYNC_ENGINE"
Engine = Literal["native", "python"]


NATIVE_ABI: Final = 3
"""What this Python code expects of ``asyncsync._native`` (its ``ABI`` constant): an extension
built from older C sources (an editable install not rebuilt) is not used."""


@cache
def _import_native() -> tuple[ModuleType | None, str]:
    try:
        module = importlib.import_module("asyncsync._native")
    except ImportError as exc:
        return None, str(exc)
    if getattr(module, "ABI", 1) != NATIVE_ABI:
        return None, "built from older sources: run `pip install -e .` again"
    return module, ""


def native_module() -> ModuleType | None:
    """The native extension when it is built and importable, else None (whatever the env)."""
    return _import_native()[0]


@cache
def active_engine() -> Engine:
    """The engine ``ASYNCSYNC_ENGINE`` selects; ``ValueError`` for an unknown value or for
    ``native`` when the extension is not built."""
    wanted = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "native", "python"):
        raise ValueError(f"{ENGINE_ENV}={wanted!r}: expected auto, native or python")
    if wanted == "python":
        return "python"
    module, why = _import_native()
    if module is None:
        if wanted == "native":
            raise ValueError(f"{ENGINE_ENV}=native, but the native engine is not built ({why})")
        return "python"
    return "native"


def native_for(engine: Engine | None = None) -> ModuleType | None:
    """The native module when ``engine`` (default: the active engine) is ``native``, else None:
    the one place a stage decides between its native and its Python code."""
    if (engine or active_engine()) != "native":
        return None
    module = native_module()
    if module is None:
        raise ValueError("the native engine is not built")
    return module


def describe_engine() -> str:
    """One line for ``--version``: the active engine and why."""
    try:
        engine = active_engine()
    except ValueError as exc:
        return f"error: {exc}"
    module = native_module()
    if engine == "native":
        assert module is not None
        return f"native (SHA-256: {module.sha256_impl()})"
    if module is not None:
        return f"python (forced by {ENGINE_ENV})"
    return "python (the native engine is not built: no C compiler at install time?)"
