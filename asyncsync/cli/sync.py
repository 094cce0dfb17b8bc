"""``asyncsync sync``: prepare the inputs (or take a prepared directory's parts), upload the
parts and create or update the audience.

Exit codes (``docs/jobs.md``): 0 done, 1 failed after retries, 2 bad usage or input, 3 paused
(a quota or a running operation; the same command resumes), 130 interrupted (143 on SIGTERM;
the journal stays consistent, the same command resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import click

from asyncsync.cli.common import (
    EXIT_PAUSED,
    api_options,
    check_api_base,
    console,
    handle_errors,
    json_option,
    prepare_options,
    print_json,
    print_phone_hint,
    run_async,
)
from asyncsync.cli.progress import CliReporter, summary_table
from asyncsync.credentials import resolve_access_token
from asyncsync.errors import InputError, Paused, UsageError
from asyncsync.jobs.spec import (
    CLI_NAMES,
    DEFAULT_RECONCILE_WINDOW,
    DEFAULT_REPLACE_THRESHOLD,
    JobSpec,
)
from asyncsync.pipeline.external import is_external
from asyncsync.rules.limits import DEFAULT_API_BASE, MAX_FILE_PATHS_PER_CALL

if TYPE_CHECKING:
    from asyncsync.sandbox import Sandbox
    from asyncsync.tiktok.client import TikTokClient


SANDBOX_ADVERTISER_ID: Final = "7000000000000000001"
"""The advertiser a ``--sandbox`` run acts for when none is given (a sandbox token fits any)."""
SANDBOX_OPERATION_SECONDS: Final = 0.2
"""How long an audience operation "runs" in the ``--sandbox`` emulator."""
SANDBOX_POLL_INTERVAL: Final = 0.05

ACTIONS: Final = ("append", "remove", "replace", "mirror")


@dataclass(frozen=True, slots=True)
class _Target:
    api_base: str
    token: str | None
    advertiser_id: str


def _check_inputs(inputs: tuple[str, ...]) -> None:
    for path in inputs:
        if path == "-" or is_external(path):  # read through pyarrow/fsspec, checked there
            continue
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file", path=path)
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory, not an input file", path=path)
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: permission denied", path=path)
    if inputs.count("-") > 1:
        raise UsageError("standard input ('-') may be given only once")


def _check_target(name: str | None, audience_id: str | None, action: str | None) -> None:
    """The library's own check of the target, its refusals naming the command's options."""
    JobSpec.check_target(name, audience_id, action, names=CLI_NAMES)


@click.command("sync")
@click.argument("inputs", nargs=-1, required=False, metavar="INPUT...")
@click.option(
    "--prepared",
    default=None,
    metavar="DIR_OR_URL",
    help="Deliver the parts of a directory written by 'asyncsync prepare' (local or s3://, "
    "gs://, az://, https://) instead of INPUT...; each part's size and MD5 are checked against "
    "its manifest first.",
)
@click.option("--name", default=None, metavar="NAME", help="Create a new audience named NAME.")
@click.option("--audience-id", default=None, metavar="ID", help="Update this existing audience.")
@click.option(
    "--action",
    type=click.Choice(ACTIONS, case_sensitive=False),
    default=None,
    help="What to do to the audience (required with --audience-id); mirror sends only the "
    "difference since the last delivery.",
)
@prepare_options
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Uploads in flight (each streams from disk: memory does not grow with it).",
)
@click.option(
    "--paths-per-call",
    type=click.IntRange(1, MAX_FILE_PATHS_PER_CALL),
    default=MAX_FILE_PATHS_PER_CALL,
    show_default=True,
    help="file_paths per create/update call (each call uses one of 24 daily operations).",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=900.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a running audience operation before pausing (exit 3).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Journal and parts [default: the user's state directory].",
)
@api_options
@click.option(
    "--replace-threshold",
    type=click.FloatRange(min=0),
    default=DEFAULT_REPLACE_THRESHOLD,
    show_default=True,
    metavar="FRACTION",
    help="mirror: send a REPLACE instead of APPEND + REMOVE when the added and removed IDs "
    "exceed this fraction of the audience as last delivered.",
)
@click.option(
    "--reconcile-window",
    type=click.FloatRange(0, 86400),
    default=DEFAULT_RECONCILE_WINDOW,
    envvar="ASYNCSYNC_RECONCILE_WINDOW",
    show_default=True,
    metavar="SECONDS",
    help="How long after sending it a create whose answer was lost is looked for before the "
    "job stops with exit 1 (the same command looks again before it ever creates).",
)
@click.option(
    "--ride-out",
    type=click.FloatRange(0, 3600),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="How long requests that cannot reach the API (refused, unreachable) keep being "
    "retried before the job fails.",
)
@click.option(
    "--allow-duplicate-name",
    is_flag=True,
    help="Create even when a live audience of the advertiser already has --name.",
)
@click.option("--dry-run", is_flag=True, help="Plan and report; send nothing.")
@click.option("--restart", is_flag=True, help="Abandon the journaled job and start over.")
@click.option(
    "--sandbox",
    is_flag=True,
    help="Run against an in-process TikTok emulator on loopback (no token needed).",
)
@json_option
@handle_errors
def sync_command(
    inputs: tuple[str, ...],
    prepared: str | None,
    name: str | None,
    audience_id: str | None,
    action: str | None,
    id_type: str,
    hash_algo: str,
    column: str | None,
    max_file_bytes: int,
    workers: int | None,
    default_country: str | None,
    concurrency: int,
    paths_per_call: int,
    max_wait: float,
    state_dir: str | None,
    advertiser_id: str | None,
    api_base: str,
    access_token_file: str | None,
    replace_threshold: float,
    reconcile_window: float,
    ride_out: float,
    allow_duplicate_name: bool,
    dry_run: bool,
    restart: bool,
    sandbox: bool,
    as_json: bool,
) -> None:
    """Prepare INPUT... (or take the parts of --prepared DIR_OR_URL) and deliver it to a
    TikTok custom audience, exactly once.

    A rerun of the same command after a crash, Ctrl-C or pause resumes the journaled job.
    """
    action = action.lower() if action else None
    _check_target(name, audience_id, action)
    if prepared is not None and inputs:
        raise UsageError("give either INPUT... or --prepared DIR_OR_URL, not both")
    if prepared is None and not inputs:
        raise UsageError("missing INPUT... (files, URLs, - for stdin) or --prepared DIR_OR_URL")
    _check_inputs(inputs)
    if sandbox:
        if api_base != DEFAULT_API_BASE:
            raise UsageError("--sandbox runs its own emulator: drop --api-base")
        target = _Target("", None, (advertiser_id or "").strip() or SANDBOX_ADVERTISER_ID)
    else:
        base = check_api_base(api_base)
        if not advertiser_id or not advertiser_id.strip():
            raise UsageError("no advertiser: pass --advertiser-id ID or set TIKTOK_ADVERTISER_ID")
        token = resolve_access_token(access_token_file).value
        target = _Target(base, token, advertiser_id.strip())

    options: dict[str, Any] = {
        "id_type": id_type,
        "hash_algo": hash_algo,
        "column": column,
        "max_file_bytes": max_file_bytes,
        "workers": workers,
        "default_country": default_country,
    }
    if prepared is not None:  # the manifest decides; an explicit --id-type/--hash must agree
        ctx = click.get_current_context()
        options = {
            key: value
            for key, value in options.items()
            if key in ("id_type", "hash_algo")
            and ctx.get_parameter_source(key) is not click.core.ParameterSource.DEFAULT
        }
    job: dict[str, Any] = {
        "name": name,
        "audience_id": audience_id,
        "action": action,
        "concurrency": concurrency,
        "paths_per_call": paths_per_call,
        "max_wait": max_wait,
        "replace_threshold": replace_threshold,
        "reconcile_window": reconcile_window,
        "allow_duplicate_name": allow_duplicate_name,
        "dry_run": dry_run,
        "restart": restart,
        "prepared": prepared,
    }
    job["ride_out"] = ride_out
    try:
        # SIGINT or SIGTERM cancels the job, which leaves the journal as it stood: Interrupted.
        summary, members = run_async(
            _run(inputs, target, sandbox, state_dir, job, options),
            hint="run the same command again to resume",
        )
    except Paused as exc:
        _report_paused(exc, as_json)
        sys.exit(EXIT_PAUSED)
    _report_done(summary, members, as_json=as_json, sandbox=sandbox, dry_run=dry_run)
    if not as_json:
        print_phone_hint(
            summary.get("calculate_type"),
            default_country,
            summary.get("rejected", {}),
            summary.get("national_phones"),
        )


async def _run(
    inputs: tuple[str, ...],
    target: _Target,
    use_sandbox: bool,
    state_dir: str | None,
    job: dict[str, Any],
    options: dict[str, Any],
) -> tuple[dict[str, Any], int | None]:
    from asyncsync.jobs import sync_audience
    from asyncsync.tiktok.client import TikTokClient

    async with contextlib.AsyncExitStack() as stack:
        api_base, token = target.api_base, target.token
        sb: Sandbox | None = None
        poll_interval = 1.0
        limits: dict[str, Any] = {}
        if use_sandbox:
            from asyncsync.sandbox import Sandbox, SandboxConfig

            sb = await stack.enter_async_context(
                Sandbox(config=SandboxConfig(operation_seconds=SANDBOX_OPERATION_SECONDS))
            )
            api_base, token = sb.api_base, sb.issue_token()
            poll_interval = SANDBOX_POLL_INTERVAL
            limits["requests_per_second"] = None  # the emulator sets no rate limit to respect
            if state_dir is None:
                # The emulator forgets everything at exit: its journal must not mix with real jobs.
                state_dir = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="asyncsync-sandbox-")
                )
        from asyncsync.tiktok.retry import RetryPolicy

        job = dict(job)
        retry = RetryPolicy(outage=job.pop("ride_out", RetryPolicy().outage))
        reporter = stack.enter_context(CliReporter(console))
        client = await stack.enter_async_context(
            TikTokClient(token, api_base=api_base, reporter=reporter, retry=retry, **limits)
        )
        try:
            result = await sync_audience(
                client,
                *inputs,
                advertiser_id=target.advertiser_id,
                state_dir=state_dir,
                reporter=reporter,
                poll_interval=poll_interval,
                **job,
                **options,
            )
        finally:
            reporter.close()
        summary = dict(result.to_json())
        members = None
        if sb is not None and summary.get("audience_id") and not job["dry_run"]:
            members = await _sandbox_members(
                sb, client, target.advertiser_id, str(summary["audience_id"])
            )
        return summary, members


async def _sandbox_members(
    sb: Sandbox, client: TikTokClient, advertiser_id: str, audience_id: str
) -> int:
    """The audience's member count once its last operation has finished (as TikTok shows it,
    an audience is not valid while an operation runs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10 * SANDBOX_OPERATION_SECONDS + 5.0
    while loop.time() < deadline:
        found = await client.get_audiences(advertiser_id, [audience_id])
        if all(a.is_valid for a in found):
            break
        await asyncio.sleep(SANDBOX_POLL_INTERVAL)
    return len(sb.state.audience(advertiser_id, audience_id).members)


def _report_done(
    summary: Mapping[str, Any],
    members: int | None,
    *,
    as_json: bool,
    sandbox: bool,
    dry_run: bool,
) -> None:
    if as_json:
        out = dict(summary)
        if sandbox:
            out["sandbox_members"] = members
        print_json(out)
        return
    title = "sync (dry run: nothing sent)" if dry_run else "sync"
    console.print(summary_table(summary, title=title))
    mirror = summary.get("mirror")
    if isinstance(mirror, Mapping):
        console.print(
            f"mirror: {mirror.get('mode')}: {mirror.get('reason')} (added "
            f"{mirror.get('added', 0):,}, removed {mirror.get('removed', 0):,}, unchanged "
            f"{mirror.get('unchanged', 0):,}; snapshot {mirror.get('snapshot')})",
            markup=False,
        )
    plan = summary.get("plan")
    if dry_run and plan:
        _print_plan(plan)
    if sandbox and members is not None:
        console.print(
            f"The sandbox audience {summary.get('audience_id')} now holds {members:,} members "
            f"({summary.get('rows_written', 0):,} rows written). Without --sandbox, the same "
            "command with --advertiser-id and a token (see `asyncsync auth --help`) runs it "
            "against TikTok.",
            markup=False,
        )


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def _print_plan(plan: Any) -> None:
    """The dry run's plan, one line per key; lists of steps one line per step."""
    console.print("plan:", markup=False)
    items = plan.items() if isinstance(plan, Mapping) else [("steps", plan)]
    for key, value in items:
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            console.print(f"  {key}:", markup=False)
            for step in value:
                console.print(f"    - {_plain(step)}", markup=False)
        else:
            console.print(f"  {key}: {_plain(value)}", markup=False)


def _report_paused(exc: Paused, as_json: bool) -> None:
    summary: dict[str, Any] = {}
    if exc.result is not None and hasattr(exc.result, "to_json"):
        summary = dict(exc.result.to_json())
    summary["paused"] = True
    if not summary.get("pending") and exc.pending:
        summary["pending"] = exc.pending
    if exc.resume_after is not None:
        summary.setdefault("resume_after", exc.resume_after)
    if as_json:
        print_json(summary)
    else:
        console.print(summary_table(summary, title="sync (paused)"))
    one_line = " ".join(str(exc).split())
    if not one_line.startswith("paused"):
        one_line = f"paused: {one_line}"
    if "resume" not in one_line:
        one_line += "; run the same command again to resume"
    click.echo(f"asyncsync: {one_line}", err=True)


commands: list[click.Command] = [sync_command]
