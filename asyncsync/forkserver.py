"""The hashing pool's fork server, which a command can start before it imports the pipeline.

The pool's workers are forked by a ``multiprocessing`` fork server: a fresh interpreter that
imports the hashing modules once (numpy, and pyarrow's Parquet reader when an input is Parquet)
for every worker. That start takes about half a second of one core. ``asyncsync prepare`` and
``sync`` start it first thing (:func:`start`), so that it imports on the second core while the
command itself still imports its own modules, instead of after them: measured with
``benchmarks/ab.py`` on 10 M mobile IDs on 2 cores, 3.59 → 3.37 s (benchmarks/README.md).

Only this module and the standard library are loaded here. A server started this way serves
every later pool of the process; one started without the Parquet modules still serves a Parquet
input (its workers then import pyarrow themselves), so the choice made here is a guess for
speed, never a condition of correctness.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
from typing import Final

__all__ = ["PARQUET_MODULES", "WORKER_MODULE", "pool_context", "preload_modules", "start"]

WORKER_MODULE: Final = "asyncsync.pipeline.worker"
PARQUET_MODULES: Final = ("pyarrow.parquet",)
"""What the fork server also imports when an input is Parquet."""


def preload_modules(parquet: bool) -> list[str]:
    """The modules the fork server imports once, for every worker it forks."""
    return [WORKER_MODULE, *(PARQUET_MODULES if parquet else ())]


def pool_context(parquet: bool) -> multiprocessing.context.ForkServerContext:
    """The pool's start context, its fork server to preload the modules for ``parquet``
    (effective only if the server has not started yet)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload_modules(parquet))
    return ctx


def start(parquet: bool) -> None:
    """Start the fork server now (it runs until this process ends), unless it runs already."""
    pool_context(parquet)
    multiprocessing.forkserver.ensure_running()
