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
