"""The ``asyncsync`` command line. Nothing in the package imports this module.

Commands load on demand: ``asyncsync prepare`` does not pay for importing the HTTP client, the
sandbox's web server or the sync job.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
from collections.abc import Sequence
from typing import Any

import click

import asyncsync
from asyncsync.heap import keep_freed_memory

# numpy's OpenBLAS starts a thread per core when it loads, and each spins for a while before it
# sleeps; no command does linear algebra, and on 2 cores that spinning took about 5 % of a
# `prepare`'s CPU time (benchmarks/README.md, "On a 2-core AMD EPYC virtual machine"). Set
# before any command module loads numpy, and inherited by the worker processes; a value
# already set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


#: command name -> module under ``asyncsync.cli`` whose ``commands`` list holds it
_COMMANDS: dict[str, str] = {
    "audiences": "audiences",
    "auth": "auth",
    "prepare": "prepare",
    "sample": "prepare",
    "sandbox": "sandbox",
    "sync": "sync",
}


#: commands that hash their inputs on the local pool (unless given a flag of _NO_POOL_FLAGS)
_HASHING_COMMANDS = frozenset({"prepare", "sync"})
_NO_POOL_FLAGS = ("-h", "--help", "--dask", "--prepared")


class _LazyGroup(click.Group):
    def main(self, args: Sequence[str] | None = None, *rest: Any, **extra: Any) -> Any:
        if args is None:  # run as the program (the console script, python -m asyncsync)
            # The interpreter's exit collects the cyclic garbage of the whole heap before it
            # clears the modules: 0.08 s after a `prepare` of a local file, 0.2 s with botocore
            # loaded (its service models), on the critical path of a short run. Frozen instead,
            # after the exit handlers registered from here on (the pool's, the temporary
            # directories'), which run first: what is left is freed by reference counting
            # alone, the OS takes back the rest (benchmarks/README.md, "Inputs where they
            # live"). Not when called with arguments: a program that embeds the group keeps
            # its own exit.
            atexit.register(gc.freeze)
        return super().main(args, *rest, **extra)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Before anything opens a file or a pipe, and before the command's module (numpy, the
        # readers, the HTTP client) is imported.
        _reopen_closed_std_fds()
        if args and args[0] in _HASHING_COMMANDS and not ctx.resilient_parsing:
            # The blocks of a streamed input (an object, stdin, a compressed file) pass through
            # this process: its heap keeps them for the next one (asyncsync/heap.py).
            keep_freed_memory()
            if not any(a.split("=", 1)[0] in _NO_POOL_FLAGS for a in args[1:]):
                try:
                    _start_fork_server(args[1:])
                except Exception:  # only a head start: the pool starts its own server if need be
                    pass
                try:
                    _look_ahead_at_inputs(ctx, args[1:])
                except Exception:  # only a head start: the reader looks its inputs up itself
                    pass
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"asyncsync.cli.{module_name}")
        for command in module.commands:
            if command.name == cmd_name:
                return command  # type: ignore[no-any-return]
        return None


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from asyncsync.rules.engine import describe_engine

    click.echo(f"asyncsync, version {asyncsync.__version__}\nhashing engine: {describe_engine()}")
    ctx.exit()


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the hashing engine, then exit.",
)
def main() -> None:
    """Stream very large ID exports into TikTok custom audiences, exactly once."""


def _start_fork_server(args: list[str]) -> None:
    """Start the hashing pool's fork server now, so that it imports numpy (and pyarrow, if an
    input looks like Parquet) on another core while this process imports the command
    (:mod:`asyncsync.forkserver`). ``args`` are the command's, not yet parsed, so the inputs
    are guessed: a word that follows no option is judged by :func:`is_parquet` (a directory,
    a file starting with ``PAR1``...); a word after an option, which may be that option's
    value (``-o DIR``, a token file), only by a Parquet suffix in its name. A wrong guess costs
    time, never correctness."""
    from asyncsync import forkserver
    from asyncsync.locations import has_parquet_suffix, is_parquet

    def looks_parquet(i: int, word: str) -> bool:
        if word.startswith("-"):
            return False
        if i and args[i - 1].startswith("-"):
            return has_parquet_suffix(word)
        return is_parquet(word)

    forkserver.start(parquet=any(looks_parquet(i, a) for i, a in enumerate(args)))


def _look_ahead_at_inputs(ctx: click.Context, args: list[str]) -> None:
    """Start looking up the command's inputs in object storage now
    (:func:`asyncsync.remote.look_ahead`, the words :func:`~asyncsync.locations.object_inputs`
    picks): the store's answers and botocore's setup then overlap this process's imports.
    What was found is dropped when the command ends."""
    from asyncsync.locations import object_inputs

    urls = object_inputs(args)
    if urls:
        from asyncsync import remote

        ctx.call_on_close(remote.forget_look_ahead)
        remote.look_ahead(urls)


def _reopen_closed_std_fds() -> None:
    """Give a closed stdin, stdout or stderr (``cmd <&-``) /dev/null: otherwise the next file
    opened takes its number, and the event loop's internals, or a print, would use it as such."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
