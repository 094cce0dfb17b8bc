"""``asyncsync auth url|token|revoke``: the OAuth flow of TikTok's Business API.

1. ``auth url`` prints the authorization page; the advertiser approves and TikTok redirects to the
   app's redirect URL with ``auth_code=…``.
2. ``auth token`` exchanges that code (with the app secret, from ``TIKTOK_APP_SECRET`` or
   ``--secret-file``) for a long-lived access token and stores it in the token file (mode 0600 in
   a 0700 directory), which every other command reads when ``TIKTOK_ACCESS_TOKEN`` is unset.
3. ``auth revoke`` invalidates the token at TikTok and removes the token file it came from.

Secrets are never taken from the command line and never printed.
"""

from __future__ import annotations

from pathlib import Path

import click

from asyncsync.cli.common import check_api_base, console, handle_errors, print_json, run_async
from asyncsync.credentials import (
    default_token_path,
    remove_token_file,
    resolve_access_token,
    resolve_app_secret,
    write_token_file,
)
from asyncsync.rules.limits import DEFAULT_API_BASE

_app_id = click.option(
    "--app-id",
    envvar="TIKTOK_APP_ID",
    required=True,
    metavar="ID",
    help="Your TikTok app's ID [env: TIKTOK_APP_ID].",
)
_api_base = click.option(
    "--api-base",
    default=DEFAULT_API_BASE,
    show_default=True,
    metavar="URL",
    help="TikTok Business API base (http:// only on loopback, for a sandbox).",
)
_secret_file = click.option(
    "--secret-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Read the app secret from PATH (mode 0600) instead of TIKTOK_APP_SECRET.",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


@click.group("auth")
def auth() -> None:
    """Get, store and revoke an access token (OAuth)."""


@auth.command("url")
@_app_id
@click.option("--redirect-uri", required=True, metavar="URL", help="Your app's redirect URL.")
@click.option("--state", default=None, metavar="S", help="Opaque value echoed to the redirect.")
@_api_base
@_json
@handle_errors
def url_command(
    app_id: str, redirect_uri: str, state: str | None, api_base: str, as_json: bool
) -> None:
    """Print the page where an advertiser authorizes your app.

    After approval TikTok redirects to REDIRECT_URI with ``auth_code=…``; pass it to
    ``asyncsync auth token``. The page is served by the API host (``--api-base``; a sandbox
    serves its own, which approves at once).
    """
    from asyncsync.tiktok.client import TikTokClient

    url = TikTokClient.authorization_url(
        app_id, redirect_uri, state, portal_base=check_api_base(api_base)
    )
    if as_json:
        print_json({"url": url})
    else:
        click.echo(url)
        console.print(
            "Open this URL, approve, then run: asyncsync auth token "
            f"--app-id {app_id} --auth-code <auth_code from the redirect>",
            markup=False,
        )


@auth.command("token")
@_app_id
@click.option(
    "--auth-code",
    required=True,
    metavar="CODE",
    help="The auth_code TikTok appended to the redirect.",
)
@_secret_file
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Where to store the token [default: $XDG_CONFIG_HOME/asyncsync/token].",
)
@_api_base
@_json
@handle_errors
def token_command(
    app_id: str,
    auth_code: str,
    secret_file: str | None,
    token_file: str | None,
    api_base: str,
    as_json: bool,
) -> None:
    """Exchange an auth code for an access token and store it (mode 0600)."""
    from asyncsync.tiktok.client import TikTokClient

    base = check_api_base(api_base)
    secret = resolve_app_secret(secret_file)
    target = Path(token_file) if token_file else default_token_path()

    async def exchange() -> tuple[tuple[str, ...], tuple[int, ...], Path]:
        async with TikTokClient(None, api_base=base) as client:
            answer = await client.exchange_auth_code(
                app_id=app_id, secret=secret, auth_code=auth_code
            )
        written = write_token_file(answer.access_token, target)
        return tuple(answer.advertiser_ids), tuple(answer.scope), written

    advertiser_ids, scope, written = run_async(exchange())
    if as_json:
        print_json(
            {
                "token_file": str(written),
                "advertiser_ids": list(advertiser_ids),
                "scope": list(scope),
            }
        )
    else:
        console.print(f"access token stored in {written} (mode 0600)", markup=False)
        if advertiser_ids:
            console.print(f"authorized advertisers: {', '.join(advertiser_ids)}", markup=False)


@auth.command("revoke")
@_app_id
@_secret_file
@click.option(
    "--access-token-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="The token to revoke [default: TIKTOK_ACCESS_TOKEN, else the default token file].",
)
@click.option("--keep-file", is_flag=True, help="Do not delete the token file after revoking.")
@_api_base
@_json
@handle_errors
def revoke_command(
    app_id: str,
    secret_file: str | None,
    access_token_file: str | None,
    keep_file: bool,
    api_base: str,
    as_json: bool,
) -> None:
    """Revoke the stored access token at TikTok and delete its token file."""
    from asyncsync.tiktok.client import TikTokClient

    base = check_api_base(api_base)
    secret = resolve_app_secret(secret_file)
    credential = resolve_access_token(access_token_file)

    async def revoke() -> None:
        async with TikTokClient(None, api_base=base) as client:
            await client.revoke_token(app_id=app_id, secret=secret, access_token=credential.value)

    run_async(revoke())
    removed = None
    if credential.path is not None and not keep_file and remove_token_file(credential.path):
        removed = str(credential.path)
    if as_json:
        print_json({"revoked": True, "source": credential.source, "removed_file": removed})
    else:
        console.print(f"revoked the access token from {credential.source}", markup=False)
        if removed:
            console.print(f"removed {removed}", markup=False)


commands: list[click.Command] = [auth]
