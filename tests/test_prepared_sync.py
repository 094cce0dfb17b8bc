"""``sync --prepared DIR``: a directory written by ``prepare`` is checked against its manifest,
then delivered (and resumed) like any sync job, against the sandbox over loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.api import ADVERTISER
from helpers.ids import DIGEST_LINE as LINE
from helpers.ids import maids
from helpers.sandbox import client_for, sync_options

from asyncsync import sync_audience
from asyncsync.errors import InputError, NameTakenError, Paused, UsageError
from asyncsync.pipeline import PrepareResult, prepare
from asyncsync.sandbox import Sandbox
from asyncsync.tiktok.client import TikTokClient


async def prepared_dir(tmp_path: Path, seed: int, n: int, **options: Any) -> PrepareResult:
    export = tmp_path / f"export-{seed}.txt"
    export.write_text("\n".join(maids(seed, n)) + "\n")
    options.setdefault("workers", 1)
    options.setdefault("max_file_bytes", 600 * LINE)
    return await prepare(export, out_dir=tmp_path / f"prepared-{seed}", **options)


def part_digests(result: PrepareResult) -> set[str]:
    out: set[str] = set()
    for part in result.parts:
        out |= set(part.path.read_text().split())
    return out


def options(tmp_path: Path, sandbox: Sandbox, **extra: Any) -> dict[str, Any]:
    """The tests' ``sync_audience`` arguments without prepare options (the manifest has them)."""
    values = sync_options(tmp_path, sandbox, **extra)
    for key in ("workers", "max_file_bytes"):
        if key not in extra:
            del values[key]
    return values


async def settled_members(sandbox: Sandbox, client: TikTokClient, audience_id: str) -> set[str]:
    for _ in range(500):
        (audience,) = await client.get_audiences(ADVERTISER, [audience_id])
        if audience.is_valid:
            return set(sandbox.members(audience_id))
        await asyncio.sleep(0.01)
    raise AssertionError(f"audience {audience_id} stayed busy")


async def test_prepared_directory_is_delivered_with_its_manifest_counts(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    prepared = await prepared_dir(tmp_path, 1, 2500)
    assert len(prepared.parts) == 5
    async with client_for(sandbox) as client:
        result = await sync_audience(
            client, prepared=prepared.out_dir, name="elsewhere", **options(tmp_path, sandbox)
        )
        members = await settled_members(sandbox, client, str(result.audience_id))
        again = await sync_audience(
            client, prepared=prepared.out_dir, name="elsewhere", **options(tmp_path, sandbox)
        )
    assert members == part_digests(prepared)
    assert result.calculate_type == prepared.calculate_type.value
    assert (result.rows_read, result.rows_written, result.parts) == (2500, 2500, 5)
    assert again.resumed and again.api_calls == 0 and again.audience_id == result.audience_id
    assert all(p.path.exists() for p in prepared.parts), "the user's directory is left alone"


async def test_a_paused_delivery_resumes_without_uploading_a_part_twice(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    prepared = await prepared_dir(tmp_path, 2, 3000)
    opts = options(tmp_path, sandbox, paths_per_call=2)
    async with client_for(sandbox) as client:
        with pytest.raises(Paused):
            await sync_audience(
                client, prepared=prepared.out_dir, name="resumed", **opts | {"max_wait": 0.0}
            )
        upload_path = next(k for k in sandbox.request_counts() if k.endswith("/file/upload/"))
        uploads = sandbox.request_counts()[upload_path]
        result = await sync_audience(client, prepared=prepared.out_dir, name="resumed", **opts)
        members = await settled_members(sandbox, client, str(result.audience_id))
    assert result.resumed
    assert members == part_digests(prepared)
    assert uploads == len(prepared.parts)
    assert sandbox.request_counts()[upload_path] == uploads


async def test_a_tampered_part_is_refused_naming_it_before_any_request(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    prepared = await prepared_dir(tmp_path, 3, 1800)
    victim = prepared.parts[1]
    data = bytearray(victim.path.read_bytes())
    data[5] = ord("0") if data[5] != ord("0") else ord("1")  # same size, other bytes
    victim.path.write_bytes(bytes(data))
    async with client_for(sandbox) as client:
        with pytest.raises(InputError, match=rf"part {victim.file} has another MD5"):
            await sync_audience(
                client, prepared=prepared.out_dir, name="t", **options(tmp_path, sandbox)
            )
        prepared.parts[2].path.unlink()
        victim.path.write_bytes(bytes(data[:-LINE]))
        with pytest.raises(InputError, match=rf"part {victim.file} has \d+ bytes, the manifest"):
            await sync_audience(
                client, prepared=prepared.out_dir, name="t", **options(tmp_path, sandbox)
            )
        assert client.stats.api_calls == 0
    assert sum(sandbox.request_counts().values()) == 0


async def test_a_manifest_of_another_calculate_type_than_the_audience_is_refused(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    emails = tmp_path / "emails.txt"
    emails.write_text("".join(f"user{i}@example.com\n" for i in range(1200)))
    async with client_for(sandbox) as client:
        made = await sync_audience(
            client, emails, name="emails", id_type="email", **options(tmp_path, sandbox)
        )
        prepared = await prepared_dir(tmp_path, 4, 1200)  # FIRST_SHA256
        with pytest.raises(UsageError, match="holds EMAIL_SHA256 IDs but this input gives"):
            await sync_audience(
                client,
                prepared=prepared.out_dir,
                audience_id=made.audience_id,
                action="append",
                **options(tmp_path, sandbox),
            )
        with pytest.raises(UsageError, match="holds FIRST_SHA256 digests, not EMAIL_SHA256"):
            await sync_audience(
                client,
                prepared=prepared.out_dir,
                name="x",
                id_type="email",
                **options(tmp_path, sandbox),
            )


async def test_inputs_and_prepared_together_are_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    prepared = await prepared_dir(tmp_path, 5, 100)
    async with client_for(sandbox) as client:
        with pytest.raises(UsageError, match="either input files or a prepared directory"):
            await sync_audience(
                client, "x.txt", prepared=prepared.out_dir, name="n", **options(tmp_path, sandbox)
            )
        with pytest.raises(InputError, match="no manifest"):
            await sync_audience(
                client, prepared=tmp_path / "nothing", name="n", **options(tmp_path, sandbox)
            )


async def test_a_delivery_looks_its_name_up_before_it_creates(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    prepared = await prepared_dir(tmp_path, 9, 1500)
    async with client_for(sandbox) as client:
        first = await sync_audience(
            client, prepared=prepared.out_dir, name="Delivered", **options(tmp_path, sandbox)
        )
        # Another state dir (a second machine, a lost disk): the name is taken, nothing created.
        elsewhere = options(tmp_path, sandbox, state_dir=tmp_path / "other-home")
        with pytest.raises(NameTakenError) as refused:
            await sync_audience(client, prepared=prepared.out_dir, name="Delivered", **elsewhere)
        assert refused.value.exit_code == 2
        assert refused.value.audience_id == first.audience_id
        assert f"--audience-id {first.audience_id} --action" in str(refused.value)
        named = [a for a in await client.list_audiences(ADVERTISER) if a.name == "Delivered"]
        assert [a.audience_id for a in named] == [first.audience_id]
        second = await sync_audience(
            client,
            prepared=prepared.out_dir,
            name="Delivered",
            allow_duplicate_name=True,
            **elsewhere,
        )
    assert second.audience_id != first.audience_id


async def test_a_dry_run_plans_the_delivery_and_leaves_the_directory_alone(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    prepared = await prepared_dir(tmp_path, 7, 1800)
    before = {p.path: p.path.read_bytes() for p in prepared.parts}
    async with client_for(sandbox) as client:
        dry = await sync_audience(
            client,
            prepared=prepared.out_dir,
            name="dry",
            dry_run=True,
            **options(tmp_path, sandbox),
        )
        real = await sync_audience(
            client, prepared=prepared.out_dir, name="dry", **options(tmp_path, sandbox)
        )
    assert dry.plan is not None and dry.plan.parts == len(prepared.parts) == real.parts
    assert dry.rows_written == real.rows_written == 1800
    assert {p.path: p.path.read_bytes() for p in prepared.parts} == before


async def test_a_prepared_directory_is_not_mirrored(sandbox: Sandbox, tmp_path: Path) -> None:
    prepared = await prepared_dir(tmp_path, 8, 100)
    async with client_for(sandbox) as client:
        with pytest.raises(UsageError, match="cannot be mirrored"):
            await sync_audience(
                client,
                prepared=prepared.out_dir,
                name="m",
                action="mirror",
                **options(tmp_path, sandbox),
            )
        with pytest.raises(UsageError, match="or a prepared directory"):
            await sync_audience(client, name="m", **options(tmp_path, sandbox))
        assert client.stats.api_calls == 0


def test_cli_sync_prepared_against_the_sandbox(tmp_path: Path) -> None:
    export = tmp_path / "export.txt"
    export.write_text("\n".join(maids(6, 1500)) + "\n")
    cli = [sys.executable, "-m", "asyncsync"]
    prep = tmp_path / "prep"
    subprocess.run([*cli, "prepare", str(export), "-o", str(prep)], check=True, capture_output=True)
    done = subprocess.run(
        [*cli, "sync", "--prepared", str(prep), "--sandbox", "--name", "cli", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows_written"] == 1500 and summary["sandbox_members"] == 1500

    (prep / "part-00001.txt").write_text("tampered\n")
    done = subprocess.run(
        [*cli, "sync", "--prepared", str(prep), "--sandbox", "--name", "cli2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "part part-00001.txt has 9 bytes" in done.stderr
    assert done.stderr.strip().count("\n") == 0

    done = subprocess.run(
        [*cli, "sync", str(export), "--prepared", str(prep), "--sandbox", "--name", "cli3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "not both" in done.stderr

    done = subprocess.run(
        [*cli, "sync", "--sandbox", "--name", "cli4"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "--prepared DIR_OR_URL" in done.stderr
