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
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.s3 import S3Server, credentials, free_port

from asyncsync.locations import object_inputs

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


def test_object_inputs_are_told_from_the_other_words() -> None:
    cases: dict[tuple[str, ...], list[str]] = {
        ("s3://b/export.txt", "-o", "out"): ["s3://b/export.txt"],
        # After an option (maybe its value), an object store's URL still counts...
        ("-o", "out", "--json", "s3://b/a.txt", "gs://b/c.csv.gz"): [
            "s3://b/a.txt",
            "gs://b/c.csv.gz",
        ],
        # ...an http(s) one does not (--api-base takes one); without an option before, it does.
        ("s3://b/a.txt", "--api-base", "https://api.example/"): ["s3://b/a.txt"],
        ("https://example.com/export.txt", "-o", "out"): ["https://example.com/export.txt"],
        # Datasets and prefixes are listed, not read as one object; local files are local.
        ("s3://b/data.parquet", "s3://b/prefix/", "s3://b/part-*.txt", "in.txt", "-"): [],
    }
    for args, want in cases.items():
        assert object_inputs(list(args)) == want, args


API_SPY = """
import sys
from botocore.client import BaseClient

calls = []
real = BaseClient._make_api_call


def spy(self, operation, params):
    calls.append(("numpy" in sys.modules, operation))
    return real(self, operation, params)


BaseClient._make_api_call = spy
from asyncsync.cli import main

try:
    main()
finally:
    print("CALLS", repr(calls), file=sys.stderr)
"""


def test_an_object_input_is_looked_up_before_the_command_imports_numpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = S3Server(free_port())
    server.start()
    try:
        credentials(monkeypatch, server)
        url = server.put("ahead/ids.txt", ("\n".join(ids(3_000)) + "\n").encode())
        proc = subprocess.run(
            [sys.executable, "-c", API_SPY, "prepare", url, "-o", str(tmp_path / "o"), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.kill()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows_written"] == 3_000
    line = next(x for x in proc.stderr.splitlines() if x.startswith("CALLS "))
    calls = ast.literal_eval(line.removeprefix("CALLS "))
    # The HEAD, then the GET of the first block, before numpy; one of each for the whole
    # read (the GET is taken on), then the end of the read checks the object once more.
    assert calls[:2] == [(False, "HeadObject"), (False, "GetObject")], calls
    assert [op for _, op in calls] == ["HeadObject", "GetObject", "HeadObject"], calls


class _SlowStore(http.server.BaseHTTPRequestHandler):
    """Answers a HEAD at once and never a GET: an S3 store that stalls mid-conversation."""

    seen: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        self.seen.append("HEAD")
        self.send_response(200)
        self.send_header("Content-Length", str(50 << 20))
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Last-Modified", "Wed, 02 Dec 2026 00:00:00 GMT")
        self.end_headers()

    def do_GET(self) -> None:
        self.seen.append("GET")
        time.sleep(90)

    def log_message(self, *args: object) -> None:
        pass


def test_a_command_that_ends_early_does_not_wait_for_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowStore)
    store.daemon_threads = True
    threading.Thread(target=store.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{store.server_address[1]}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        # --help: no request at all; a usage error: the look-ahead's HEAD and GET went out,
        # and the GET that never answers does not hold the command's exit (botocore would
        # wait 60 s for it, then retry).
        for args, code, seen in (
            (("--help",), 0, []),
            (("--no-such-option",), 2, ["HEAD", "GET"]),
        ):
            _SlowStore.seen.clear()
            proc = subprocess.run(
                [sys.executable, "-m", "asyncsync", "prepare", "s3://b/k.txt", *args],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            assert proc.returncode == code, proc.stderr
            deadline = time.monotonic() + 5
            while _SlowStore.seen != seen and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _SlowStore.seen == seen, args
    finally:
        store.shutdown()
        store.server_close()


EXIT_SPY = """
import atexit
import gc
import sys


def last() -> None:  # registered before the command line's handlers: runs after them
    print("FROZEN", gc.get_freeze_count() > 0, file=sys.stderr)


atexit.register(last)
from asyncsync.cli import main

if sys.argv[1] == "program":  # as the console script runs it: the arguments from sys.argv
    del sys.argv[1]
    main()
else:  # embedded: called with its arguments
    main(sys.argv[2:])
"""


def test_the_program_skips_collecting_the_whole_heap_at_exit(tmp_path: Path) -> None:
    # The exit's collection of cyclic garbage over the whole heap took 0.08 to 0.2 s of a short
    # run (benchmarks/README.md): run as the program, the command line freezes the heap once
    # the other exit handlers have run; a program that embeds the group keeps its own exit.
    for how, frozen in (("program", True), ("embedded", False)):
        out = tmp_path / f"{how}.txt"
        proc = subprocess.run(
            [sys.executable, "-c", EXIT_SPY, how, "sample", "-n", "10", "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"FROZEN {frozen}" in proc.stderr.splitlines(), how
        assert len(out.read_text().splitlines()) == 10
