"""CLI commands: ``prepare`` (inputs to part files + manifest) and ``sample`` (a sample export)."""

from __future__ import annotations

from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from asyncsync.cli.common import (
    console,
    handle_errors,
    prepare_options,
    print_json,
    print_phone_hint,
    run_async,
)
from asyncsync.errors import UsageError
from asyncsync.events import ChunkHashed, Event, PartWritten
from asyncsync.pipeline import PrepareOptions, PrepareResult, prepare
from asyncsync.pipeline.prepare import MANIFEST_NAME
from asyncsync.remote import display_name, is_remote
from asyncsync.sample import KINDS, write_sample


def _where(result: PrepareResult, url: str | None) -> tuple[str, str]:
    """(output directory, manifest) as shown: the URL for an output in object storage."""
    if url is None:
        return str(result.out_dir), str(result.manifest_path)
    base = display_name(url).rstrip("/")
    return base, f"{base}/{MANIFEST_NAME}"


def summary(result: PrepareResult, url: str | None = None) -> dict[str, Any]:
    """The ``--json`` summary of ``prepare``: the manifest's keys plus where it is (``url``:
    the output's URL when it went to object storage)."""
    out = result.to_manifest()
    out["out_dir"], out["manifest"] = _where(result, url)
    out["ids_per_s"] = round(result.rows_read / result.elapsed_s) if result.elapsed_s else None
    return out


def _print_summary(result: PrepareResult, url: str | None = None) -> None:
    rate = result.rows_read / result.elapsed_s if result.elapsed_s else 0.0
    rejected = ", ".join(f"{k} {v:,}" for k, v in result.rejected.items())
    console.print(
        f"rows read {result.rows_read:,}  valid {result.rows_valid:,}  "
        f"invalid {result.rows_invalid:,} ({rejected})"
    )
    console.print(
        f"duplicates {result.duplicates:,}  written {result.rows_written:,}  "
        f"parts {len(result.parts)} ({result.bytes_written:,} bytes, "
        f"{result.calculate_type.value})"
    )
    manifest = _where(result, url)[1]
    console.print(f"elapsed {result.elapsed_s:.2f} s  {rate:,.0f} IDs/s  -> {manifest}")
    for line in result.rejected_sample[:5]:
        console.print(f"  rejected: {line.input}:{line.line}: {line.reason}")


class _ProgressReporter:
    """Draws rows hashed and parts written on stderr (only when stderr is a terminal)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.rows = progress.add_task("hashing", total=None, unit="rows")
        self.parts = progress.add_task("parts", total=None, unit="parts")

    def __call__(self, event: Event, /) -> None:
        if isinstance(event, ChunkHashed):
            self.progress.update(self.rows, advance=event.rows)
        elif isinstance(event, PartWritten):
            self.progress.update(self.parts, advance=1)


@click.command("prepare")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for part-NNNNN.txt files and manifest.json (stale parts there are removed); "
    "with --dask, also an s3:// gs:// az:// URL.",
)
@prepare_options
@click.option(
    "--dask",
    "dask_scheduler",
    metavar="SCHEDULER_ADDRESS",
    default=None,
    help="Run the hashing and dedupe on this Dask cluster (e.g. tcp://host:8786; needs the "
    "extra asyncsync[dask]). INPUT... may then be fsspec URLs and Parquet; -o must be a "
    "directory every worker sees at the same path, or an object storage URL such as "
    "s3://bucket/prefix/ that the workers write the parts to.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@handle_errors
def prepare_command(
    inputs: tuple[str, ...],
    out_dir: str,
    id_type: str,
    hash_algo: str | None,
    column: str | None,
    max_file_bytes: int,
    workers: int | None,
    default_country: str | None,
    dask_scheduler: str | None,
    as_json: bool,
) -> None:
    """Normalize, hash, dedupe and split INPUT... (text/CSV files, .gz, .zst, - for stdin or a
    pipe such as <(zcat a.gz), Parquet files, directories or globs, s3:// gs:// az:// https://
    URLs) into part files and a manifest. No network but for reading remote inputs (and the
    Dask cluster given with --dask)."""
    if dask_scheduler is not None:
        result = _prepare_on_dask(
            inputs,
            out_dir,
            id_type,
            hash_algo,
            column,
            max_file_bytes,
            workers,
            dask_scheduler,
            default_country,
        )
        url = out_dir if is_remote(out_dir) else None
        if as_json:
            print_json(summary(result, url))
        else:
            _print_summary(result, url)
        return
    if is_remote(out_dir):
        raise UsageError(
            f"-o {display_name(out_dir)}: an object storage output needs --dask (the local "
            "prepare writes to a directory)"
        )
    options = PrepareOptions(
        id_type=id_type,  # type: ignore[arg-type]
        hash_algo=hash_algo,  # type: ignore[arg-type]
        column=column,
        max_file_bytes=max_file_bytes,
        workers=workers,
        default_country=default_country,
    )
    if console.is_terminal and not as_json:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,} {task.fields[unit]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            result = run_async(
                prepare(
                    *inputs, out_dir=out_dir, options=options, reporter=_ProgressReporter(progress)
                )
            )
    else:
        result = run_async(prepare(*inputs, out_dir=out_dir, options=options))
    if as_json:
        print_json(summary(result))
    else:
        _print_summary(result)
        print_phone_hint(
            result.calculate_type.value, default_country, result.rejected, result.national_phones
        )


def _prepare_on_dask(
    inputs: tuple[str, ...],
    out_dir: str,
    id_type: str,
    hash_algo: str | None,
    column: str | None,
    max_file_bytes: int,
    workers: int | None,
    scheduler: str,
    default_country: str | None,
) -> PrepareResult:
    """``prepare --dask``: Dask is imported only here, so the local command never pays for it."""
    if workers is not None:
        raise UsageError("--workers sets the local pool; with --dask the cluster's workers hash")
    try:
        from asyncsync.dask import prepare as dask_prepare
    except ImportError as exc:
        raise UsageError(
            f"--dask needs the Dask extra: pip install 'asyncsync[dask]' ({exc})"
        ) from None
    if console.is_terminal:
        console.print(f"preparing on the Dask cluster at {scheduler} ...")
    return dask_prepare(
        list(inputs),
        out_dir=out_dir,
        column=column,
        id_type=id_type,
        hash=hash_algo,
        max_file_bytes=max_file_bytes,
        client=scheduler,
        default_country=default_country,
    )


@click.command("sample")
@click.option("-n", "rows", type=click.IntRange(min=0), required=True, help="Lines to write.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File.")
@click.option("--kind", type=click.Choice(KINDS), default="maid", show_default=True)
@click.option("--gzip", "compress", is_flag=True, help="Compress the file with gzip.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@handle_errors
def sample_command(rows: int, output: str, kind: str, compress: bool, seed: int) -> None:
    """Write a realistic sample export: mixed-case IDs, duplicates, blank and invalid lines."""
    written = write_sample(output, rows, kind=kind, compress=compress, seed=seed)
    console.print(f"wrote {rows:,} {kind} lines ({written:,} bytes) to {output}")


commands: list[click.Command] = [prepare_command, sample_command]
