"""``asyncsync audiences list|get|rename|delete``: manage custom audiences."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.table import Table

from asyncsync.cli.common import (
    api_options,
    check_api_base,
    console,
    handle_errors,
    json_option,
    print_json,
    run_async,
)
from asyncsync.credentials import resolve_access_token
from asyncsync.errors import UsageError

if TYPE_CHECKING:
    from asyncsync.tiktok.client import TikTokClient
    from asyncsync.tiktok.wire import Audience

T = TypeVar("T")


def require_advertiser_id(advertiser_id: str | None) -> str:
    """The advertiser ID, or ``UsageError`` (exit 2) saying how to give it."""
    if not advertiser_id or not advertiser_id.strip():
        raise UsageError("no advertiser: pass --advertiser-id ID or set TIKTOK_ADVERTISER_ID")
    return advertiser_id.strip()


def _with_client(
    api_base: str, access_token_file: str | None, work: Callable[[TikTokClient], Awaitable[T]]
) -> T:
    base = check_api_base(api_base)
    token = resolve_access_token(access_token_file).value

    from asyncsync.tiktok.client import TikTokClient

    async def main() -> T:
        async with TikTokClient(token, api_base=base) as client:
            return await work(client)

    return run_async(main())


def audience_json(audience: Audience) -> dict[str, Any]:
    """An audience as the ``--json`` output shows it (TikTok's field names)."""
    data = asdict(audience)
    data.pop("raw", None)
    return data


def _table(audiences: Sequence[Audience]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("audience_id", "name", "calculate_type", "members", "valid", "expiring"):
        table.add_column(column, justify="right" if column == "members" else "left")
    for a in audiences:
        table.add_row(
            a.audience_id,
            a.name,
            a.calculate_type or "-",
            "-" if a.cover_num is None else f"{a.cover_num:,}",
            "-" if a.is_valid is None else ("yes" if a.is_valid else "no"),
            "-" if a.is_expiring is None else ("yes" if a.is_expiring else "no"),
        )
    return table


def _show(audiences: Sequence[Audience], as_json: bool) -> None:
    if as_json:
        print_json({"audiences": [audience_json(a) for a in audiences]})
    elif audiences:
        console.print(_table(audiences))
    else:
        console.print("no audiences", markup=False)


@click.group("audiences")
def audiences() -> None:
    """List, inspect, rename and delete custom audiences."""


@audiences.command("list")
@api_options
@json_option
@handle_errors
def list_command(
    advertiser_id: str | None, api_base: str, access_token_file: str | None, as_json: bool
) -> None:
    """List every audience of the advertiser (all pages)."""
    adv = require_advertiser_id(advertiser_id)

    async def work(client: TikTokClient) -> list[Audience]:
        return list(await client.list_audiences(adv))

    _show(_with_client(api_base, access_token_file, work), as_json)


@audiences.command("get")
@click.argument("audience_ids", nargs=-1, required=True, metavar="ID...")
@api_options
@json_option
@handle_errors
def get_command(
    audience_ids: tuple[str, ...],
    advertiser_id: str | None,
    api_base: str,
    access_token_file: str | None,
    as_json: bool,
) -> None:
    """Show audiences by ID, with their recent operation history."""
    adv = require_advertiser_id(advertiser_id)

    async def work(client: TikTokClient) -> list[Audience]:
        return list(await client.get_audiences(adv, list(audience_ids)))

    found = _with_client(api_base, access_token_file, work)
    _show(found, as_json)
    if not as_json:
        for a in found:
            for h in a.history:
                console.print(f"{a.audience_id}: {h.opt_time} {h.action} {h.msg}", markup=False)


@audiences.command("rename")
@click.argument("audience_id", metavar="ID")
@click.argument("name", metavar="NAME")
@api_options
@json_option
@handle_errors
def rename_command(
    audience_id: str,
    name: str,
    advertiser_id: str | None,
    api_base: str,
    access_token_file: str | None,
    as_json: bool,
) -> None:
    """Rename an audience (its members are left untouched)."""
    adv = require_advertiser_id(advertiser_id)

    async def work(client: TikTokClient) -> None:
        await client.update_audience(adv, audience_id, name=name)

    _with_client(api_base, access_token_file, work)
    if as_json:
        print_json({"audience_id": audience_id, "name": name})
    else:
        console.print(f"renamed audience {audience_id} to {name!r}", markup=False)


@audiences.command("delete")
@click.argument("audience_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@api_options
@json_option
@handle_errors
def delete_command(
    audience_ids: tuple[str, ...],
    yes: bool,
    advertiser_id: str | None,
    api_base: str,
    access_token_file: str | None,
    as_json: bool,
) -> None:
    """Delete audiences (asks first on a terminal; needs --yes otherwise)."""
    adv = require_advertiser_id(advertiser_id)
    ids = list(dict.fromkeys(audience_ids))
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to delete audiences without --yes when not on a terminal")
        click.confirm(
            f"Delete {len(ids)} audience(s) of advertiser {adv}: {', '.join(ids)}?",
            abort=True,
            err=True,
        )

    async def work(client: TikTokClient) -> None:
        await client.delete_audiences(adv, ids)

    _with_client(api_base, access_token_file, work)
    if as_json:
        print_json({"deleted": ids})
    else:
        console.print(f"deleted {len(ids)} audience(s): {', '.join(ids)}", markup=False)


commands: list[click.Command] = [audiences]
