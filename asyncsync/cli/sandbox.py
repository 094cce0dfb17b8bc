"""``asyncsync sandbox``: serve the TikTok emulator until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import asyncio
import math
import signal
import sys

import click

from asyncsync.cli.common import console, handle_errors, print_json, run_async
from asyncsync.errors import UsageError
from asyncsync.rules.limits import MIN_AUDIENCE_MEMBERS
from asyncsync.sandbox import FaultConfig, Sandbox, SandboxConfig

_PROBABILITY = click.FloatRange(0.0, 1.0)


async def _serve(
    host: str,
    port: int,
    token: str | None,
    config: SandboxConfig,
    faults: FaultConfig,
    as_json: bool,
    state_file: str | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - not on POSIX
        pass
    try:
        sandbox = Sandbox(host=host, port=port, config=config, faults=faults, state_file=state_file)
        await sandbox.start()
    except OSError as exc:
        raise UsageError(f"--host/--port: cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        access_token = sandbox.issue_token(token=token)
        if as_json:
            print_json({"api_base": sandbox.api_base, "access_token": access_token})
        else:
            click.echo(f"api_base: {sandbox.api_base}")
            click.echo(f"access_token: {access_token}")
        sys.stdout.flush()
        console.print(
            f"Sandbox serving TikTok's audience API on {sandbox.api_base} "
            "(the token is valid for any advertiser ID). Press Ctrl-C to stop."
        )
        await stop.wait()
    finally:
        await sandbox.close()


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free."
)
@click.option("--token", default=None, metavar="T", help="Use T as the ready access token.")
@click.option(
    "--operation-seconds",
    type=click.FloatRange(0.0, 86_400.0),
    default=2.0,
    show_default=True,
    help="How long each audience create/update runs.",
)
@click.option(
    "--min-members",
    type=click.IntRange(min=0),
    default=MIN_AUDIENCE_MEMBERS,
    show_default=True,
    help="Smallest audience an update may leave.",
)
@click.option("--seed", type=int, default=None, help="Seed of audience IDs and file paths.")
@click.option(
    "--latency-ms",
    type=click.FloatRange(0.0, 600_000.0),
    default=0.0,
    show_default=True,
    help="Answer every API request no sooner than this (a wide-area round trip).",
)
@click.option(
    "--upload-mb-per-s",
    type=click.FloatRange(0.01),
    default=None,
    help="Read each upload at most this fast, in MB/s (one TCP stream's speed). Default: no cap.",
)
@click.option(
    "--link-mb-per-s",
    type=click.FloatRange(0.01),
    default=None,
    help="Read all uploads together at most this fast, in MB/s (the uplink). Default: no cap.",
)
@click.option("--rate-limit", type=_PROBABILITY, default=0.0, help="Probability of a 40100.")
@click.option("--server-error", type=_PROBABILITY, default=0.0, help="Probability of a 50002.")
@click.option("--http-503", type=_PROBABILITY, default=0.0, help="Probability of an HTTP 503.")
@click.option("--slow", type=_PROBABILITY, default=0.0, help="Probability of a slow answer.")
@click.option("--slow-seconds", type=click.FloatRange(0.0, 3600.0), default=1.0, show_default=True)
@click.option("--drop", type=_PROBABILITY, default=0.0, help="Probability of a dropped connection.")
@click.option("--fault-seed", type=int, default=0, show_default=True, help="Seed of the faults.")
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Keep tokens, files and audiences in this file across restarts (saved on each change).",
)
@click.option("--json", "as_json", is_flag=True, help="Print api_base and token as one JSON line.")
@handle_errors
def sandbox_command(
    host: str,
    port: int,
    token: str | None,
    operation_seconds: float,
    min_members: int,
    seed: int | None,
    latency_ms: float,
    upload_mb_per_s: float | None,
    link_mb_per_s: float | None,
    rate_limit: float,
    server_error: float,
    http_503: float,
    slow: float,
    slow_seconds: float,
    drop: float,
    fault_seed: int,
    state_file: str | None,
    as_json: bool,
) -> None:
    """Serve the TikTok emulator; print its base URL and a ready access token."""
    for flag, value in (
        ("--latency-ms", latency_ms),
        ("--upload-mb-per-s", upload_mb_per_s),
        ("--link-mb-per-s", link_mb_per_s),
    ):
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, not {value}")
    config = SandboxConfig(
        operation_seconds=operation_seconds,
        min_members=min_members,
        seed=seed,
        latency_seconds=latency_ms / 1000.0,
        upload_bytes_per_second=None if upload_mb_per_s is None else upload_mb_per_s * 1e6,
        link_bytes_per_second=None if link_mb_per_s is None else link_mb_per_s * 1e6,
    )
    faults = FaultConfig(
        rate_limit=rate_limit,
        server_error=server_error,
        http_503=http_503,
        slow=slow,
        slow_seconds=slow_seconds,
        drop=drop,
        seed=fault_seed,
    )
    run_async(_serve(host, port, token, config, faults, as_json, state_file))


commands: list[click.Command] = [sandbox_command]
