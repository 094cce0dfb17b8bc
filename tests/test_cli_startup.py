"""The command line starts the hashing pool's fork server before its own heavy imports, so that
the server's imports run on another core meanwhile (``asyncsync/forkserver.py``).

Each case runs the real command in a fresh interpreter (the fork server is one per process)
with ``multiprocessing.forkserver.ensure_running`` wrapped to record, at the moment the command
line calls it, whether numpy is already imported and what the server is to preload. The pool's
own later starts call the server object directly, so only the command line's early call is
recorded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SPY = """
import sys
import multiprocessing.forkserver as fs

calls = []
real = fs.ensure_running


def spy():
    calls.append(("numpy" in sys.modules, list(fs._forkserver._preload_modules or ())))
    real()


fs.ensure_running = spy
from asyncsync.cli import main

try:
    main(sys.argv[1:])
finally:
    print("CALLS", repr(calls), file=sys.stderr)
"""


def run(*args: str) -> tuple[int, str, list[tuple[bool, list[str]]]]:
    proc = subprocess.run(
        [sys.executable, "-c", SPY, *args], capture_output=True, text=True, timeout=120
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("CALLS "))
    return proc.returncode, proc.stdout, ast.literal_eval(line.removeprefix("CALLS "))


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i * 7_919 + 3)) for i in range(n)]


def test_prepare_starts_the_server_before_numpy_and_the_pool_uses_it(tmp_path: Path) -> None:
    src = tmp_path / "ids.txt"
    src.write_text("\n".join(ids(2_000)) + "\n")
    code, out, calls = run("prepare", str(src), "-o", str(tmp_path / "out"), "--json")
    assert code == 0
    assert calls == [(False, ["asyncsync.pipeline.worker"])]
    assert json.loads(out)["rows_written"] == 2_000


def test_a_parquet_input_has_the_server_preload_pyarrow(tmp_path: Path) -> None:
    src = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": ids(1_000)}), src)
    out_dir = tmp_path / "out"
    # -o names an existing directory (which alone would look like a Parquet dataset): a word
    # after an option counts only by its suffix, as the input after --json does here.
    out_dir.mkdir()
    code, out, calls = run("prepare", "-o", str(out_dir), "--json", str(src))
    assert code == 0
    assert calls == [(False, ["asyncsync.pipeline.worker", "pyarrow.parquet"])]
    assert json.loads(out)["rows_written"] == 1_000


def test_a_text_input_beside_an_existing_output_directory_preloads_no_pyarrow(
    tmp_path: Path,
) -> None:
    src = tmp_path / "ids.txt"
    src.write_text("\n".join(ids(100)) + "\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, calls = run("prepare", str(src), "-o", str(out_dir))
    assert code == 0
    assert calls == [(False, ["asyncsync.pipeline.worker"])]


def test_no_server_for_help_or_for_a_command_that_does_not_hash(tmp_path: Path) -> None:
    # A wrong option ends the commands given --dask or --prepared at parsing, before they
    # would reach a cluster or read a directory; the decision is taken before parsing.
    cases = {
        ("prepare", "--help"): 0,
        ("sync", "-h"): 0,
        ("sample", "-n", "10", "-o", str(tmp_path / "s.txt")): 0,
        ("prepare", "in.txt", "--dask=tcp://127.0.0.1:9", "-o", "x", "--no-such-option"): 2,
        ("sync", "--prepared", str(tmp_path), "--no-such-option"): 2,
    }
    for args, want in cases.items():
        code, _, calls = run(*args)
        assert (code, calls) == (want, []), args


AHEAD_SPY = """
import sys
import asyncsync.remote as remote

calls = []


def spy(urls, **kw):
    calls.append(("numpy" in sys.modules, list(urls)))


remote.look_ahead = spy
from asyncsync.cli import main

try:
    main(sys.argv[1:])
finally:
    print("CALLS", repr(calls), file=sys.stderr)
"""


def run_ahead(*args: str) -> tuple[int, list[tuple[bool, list[str]]]]:
    """The command line's look-ahead at its remote inputs, recorded (not made: no store is
    reached); every case ends at parsing, with an unknown option, after the decision."""
    proc = subprocess.run(
        [sys.executable, "-c", AHEAD_SPY, *args, "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("CALLS "))
    return proc.returncode, ast.literal_eval(line.removeprefix("CALLS "))


def test_remote_inputs_are_looked_up_before_numpy_is_imported() -> None:
    cases: dict[tuple[str, ...], list[str]] = {
        ("prepare", "s3://b/export.txt", "-o", "out"): ["s3://b/export.txt"],
        # After an option (maybe its value), an object store's URL still counts...
        ("prepare", "-o", "out", "--json", "s3://b/a.txt", "gs://b/c.csv.gz"): [
            "s3://b/a.txt",
            "gs://b/c.csv.gz",
        ],
        # ...an http(s) one does not (--api-base takes one); without an option before, it does.
        ("sync", "s3://b/a.txt", "--api-base", "https://api.example/"): ["s3://b/a.txt"],
        ("prepare", "https://example.com/export.txt", "-o", "out"): [
            "https://example.com/export.txt"
        ],
    }
    for args, want in cases.items():
        code, calls = run_ahead(*args)
        assert (code, calls) == (2, [(False, want)]), args


def test_no_look_ahead_at_datasets_local_files_or_without_the_local_pool(tmp_path: Path) -> None:
    cases: list[tuple[str, ...]] = [
        ("prepare", "s3://b/data.parquet", "s3://b/prefix/", "s3://b/part-*.txt", "-o", "o"),
        ("prepare", str(tmp_path / "local.txt"), "-o", "out"),
        ("prepare", "s3://b/a.txt", "--dask=tcp://127.0.0.1:9", "-o", "out"),
        ("sync", "--prepared", "s3://b/prepared"),
        ("prepare", "s3://b/a.txt", "--help"),
    ]
    for args in cases:
        code, calls = run_ahead(*args)
        assert calls == [], args
        assert code in (0, 2), args


EXIT_SPY = """
import atexit
import gc
import sys


def last() -> None:  # registered before the command line's handlers: runs after them
    print("FROZEN", gc.get_freeze_count() > 0, file=sys.stderr)


atexit.register(last)
from asyncsync.cli import main

main(sys.argv[1:])
"""


def test_the_exit_skips_collecting_the_whole_heap(tmp_path: Path) -> None:
    # The exit's collection of cyclic garbage over the whole heap took 0.08 to 0.2 s of a short
    # run (benchmarks/README.md): the command line freezes the heap once its handlers have run.
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SPY, "sample", "-n", "10", "-o", str(tmp_path / "s.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "FROZEN True" in proc.stderr.splitlines()
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 10
