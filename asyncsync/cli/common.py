"""What every CLI command shares: error → exit code mapping, the event loop, common options.

This package is the only code that prints, draws progress or calls ``sys.exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console

from asyncsync.errors import AsyncSyncError
from asyncsync.rules.limits import DEFAULT_MAX_FILE_BYTES, MAX_FILE_BYTES, HashAlgo, IdType

P = ParamSpec("P")
T = TypeVar("T")

EXIT_FAILED = 1
EXIT_PAUSED = 3
EXIT_INTERRUPTED = 130
"""Stopped by SIGINT (Ctrl-C): 128 + 2."""
EXIT_TERMINATED = 143
"""Stopped by SIGTERM (``kill``, a service manager, a timeout): 128 + 15."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Human output goes to stderr so that ``--json`` leaves stdout to the JSON summary.
console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``asyncsync: error: message`` on one line to stderr and exit with ``code``."""
    one_line = " ".join(str(message).split())
    click.echo(f"asyncsync: error: {one_line}", err=True)
    sys.exit(code)


class Interrupted(Exception):
    """The command was stopped by SIGINT or SIGTERM; its exit code is 128 + the signal number.

    Both stop a command the same way: the running coroutine is cancelled, so every stage cleans
    up (the pool shuts down, the journal keeps what was done) before the process exits.
    """

    def __init__(self, signum: int, hint: str = "") -> None:
        self.signum = signum
        what = "interrupted" if signum == signal.SIGINT else "terminated"
        name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
        super().__init__(f"{what}{name}{'; ' + hint if hint else ''}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass(slots=True)
class _Stop:
    signum: int | None = None


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Outside the event loop, SIGTERM raises :class:`Interrupted` as SIGINT raises
    ``KeyboardInterrupt`` (only where Python lets a handler be set: the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _stoppable(coro: Coroutine[Any, Any, T], stop: _Stop) -> T:
    """Run ``coro``; SIGINT or SIGTERM cancels it (so that it cleans up) and is remembered in
    ``stop.signum``."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(signum: int) -> None:
        stop.signum = signum
        task.cancel()

    installed: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, on_signal, signum)
                installed[signum] = previous
    try:
        return await coro
    finally:
        for number, before in installed.items():
            loop.remove_signal_handler(number)
            signal.signal(number, before)  # as it was before the loop took it over


def run_async(coro: Coroutine[Any, Any, T], *, hint: str = "") -> T:
    """Run ``coro`` on uvloop when available (the CLI's event loop), else on asyncio's.

    SIGINT and SIGTERM cancel ``coro`` and then raise :class:`Interrupted` (whatever the
    cancelled coroutine raised on its way out is its ``__cause__``); ``hint`` is added to its
    message (such as how to resume).
    """
    stop = _Stop()
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
            return asyncio.run(_stoppable(coro, stop))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_stoppable(coro, stop))
    except BaseException as exc:
        if stop.signum is None:
            raise
        raise Interrupted(stop.signum, hint) from exc


def handle_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Turn asyncsync errors into one line on stderr and the contract's exit code.

    ``AsyncSyncError`` → its ``exit_code``; Ctrl-C (SIGINT) → 130 and SIGTERM → 143, each with
    one line (``asyncsync: interrupted`` / ``asyncsync: terminated (SIGTERM)``); any other
    exception → exit 1 with a one-line message (set ``ASYNCSYNC_DEBUG=1`` to see the traceback).
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            with _sigterm_raises():
                return func(*args, **kwargs)
        except Interrupted as exc:
            click.echo(f"asyncsync: {exc}", err=True)
            sys.exit(exc.exit_code)
        except AsyncSyncError as exc:
            if os.environ.get("ASYNCSYNC_DEBUG"):
                raise
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("asyncsync: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("ASYNCSYNC_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (set ASYNCSYNC_DEBUG=1 for details)")

    return wrapper


def print_json(obj: Any) -> None:
    """Write ``obj`` as one JSON object on one line of stdout."""
    click.echo(json.dumps(obj, sort_keys=True, default=str))


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"50MB"`` → 50_000_000; ``"64MiB"`` → 67_108_864; a bare number is bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (try 50MB, 64MiB or a number of bytes)")
    number, unit = m.group(1), (m.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    power = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3}[unit[:1]]
    return int(float(number) * base**power)


class SizeParam(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def __init__(self, maximum: int | None = None) -> None:
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            n = value
        else:
            try:
                n = parse_size(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if n <= 0:
            self.fail("must be positive", param, ctx)
        if self.maximum is not None and n > self.maximum:
            self.fail(f"{n} bytes is more than TikTok's limit of {self.maximum} bytes", param, ctx)
        return n


def prepare_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every data command (prepare, sync) takes."""
    options = [
        click.option(
            "--id-type",
            type=click.Choice([t.value for t in IdType]),
            default=IdType.AUTO.value,
            show_default=True,
            help="What the input holds; auto means mobile IDs (IDFA/GAID).",
        ),
        click.option(
            "--hash",
            "hash_algo",
            type=click.Choice([h.value for h in HashAlgo]),
            default=None,
            help="Digest written to the parts (email and phone: sha256 only) [default: the "
            "hash of already hashed input (--id-type sha256|md5), else sha256].",
        ),
        click.option(
            "--column",
            default=None,
            metavar="NAME|INDEX",
            help="CSV input: take this column (header name, or 1-based index as cut -f); "
            "Parquet: the ID column (required when the file has more than one).",
        ),
        click.option(
            "--max-file-bytes",
            type=SizeParam(MAX_FILE_BYTES),
            default=DEFAULT_MAX_FILE_BYTES,
            show_default=True,
            help="Largest part file (at most 250MB); accepts 50MB, 64MiB, bytes.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1, max=256),
            default=None,
            help="Hashing processes [default: CPU count].",
        ),
        click.option(
            "--default-country",
            default=None,
            metavar="CC",
            help=(
                "Phones: read numbers written without + or 00 as numbers of this country "
                "(ISO 3166 alpha-2, e.g. US, GB); without it a number with a single leading 0 "
                "is malformed."
            ),
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def print_phone_hint(
    calculate_type: object,
    default_country: str | None,
    rejected: Mapping[str, int],
    national: int | None = None,
) -> None:
    """After a phone input without ``--default-country``: say how many numbers were national
    (a single leading 0: no country code), or at least how many were malformed, and suggest the
    option."""
    malformed = rejected.get("malformed", 0)
    if str(calculate_type) != "PHONE_SHA256" or default_country or not malformed:
        return
    if national is not None and not national:
        return
    what = (
        f"{national:,} phone number(s) were national numbers (a single leading 0) and were "
        "rejected as malformed: they lack their country code."
        if national is not None
        else f"{malformed:,} phone number(s) were malformed. A number written with a single "
        "leading 0 is a national number without its country code."
    )
    console.print(
        f"{what} Pass --default-country CC (e.g. US, GB) to read numbers written without + or 00 "
        "as numbers of that country.",
        markup=False,
    )


def check_api_base(url: str) -> str:
    """``url`` without its trailing slash, when it is a safe ``--api-base`` (https, or plain
    http on loopback only). Raises ``UsageError``."""
    from asyncsync.tiktok.wire import check_api_base as check

    return check(url, name="--api-base")


def api_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--api-base``, ``--access-token-file`` and ``--advertiser-id``: what an API command takes.

    ``--advertiser-id`` falls back to ``TIKTOK_ADVERTISER_ID``; presence is checked by the command
    (so that a missing value is a one-line error, exit 2).
    """
    from asyncsync.rules.limits import DEFAULT_API_BASE

    options = [
        click.option(
            "--advertiser-id",
            envvar="TIKTOK_ADVERTISER_ID",
            default=None,
            metavar="ID",
            help="Advertiser to act for [env: TIKTOK_ADVERTISER_ID].",
        ),
        click.option(
            "--api-base",
            default=DEFAULT_API_BASE,
            show_default=True,
            metavar="URL",
            help="TikTok Business API base (http:// only on loopback, for a sandbox).",
        ),
        click.option(
            "--access-token-file",
            type=click.Path(dir_okay=False),
            default=None,
            metavar="PATH",
            help="Read the access token from PATH (mode 0600) instead of TIKTOK_ACCESS_TOKEN "
            "or the default token file.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: one JSON object on stdout at the end; human output stays on stderr."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object on stdout at the end."
    )(func)
