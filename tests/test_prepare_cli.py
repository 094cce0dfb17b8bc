"""`asyncsync prepare` through the command line: summary, --json, stdin, and every bad input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from asyncsync.cli import main


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i * 104_729 + 17)) for i in range(n)]


def run(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_prepare_json_summary_has_the_contract_keys(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join([*ids(500), "", "bad", ids(1)[0].upper()]) + "\n")
    code, out, err = run(
        "prepare",
        str(src),
        "-o",
        str(tmp_path / "out"),
        "--json",
        "--max-file-bytes",
        "10kB",
        "--workers",
        "2",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rows_read"] == 503
    assert summary["rejected"] == {"empty": 1, "malformed": 1, "zero_id": 0}
    assert (summary["duplicates"], summary["rows_written"]) == (1, 500)
    assert summary["calculate_type"] == "FIRST_SHA256"
    assert len(summary["parts"]) == 4 and all(p["bytes"] <= 10_000 for p in summary["parts"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["parts"] == summary["parts"]


def test_prepare_prints_a_human_summary_on_stderr(tmp_path: Path) -> None:
    src = tmp_path / "in.txt.gz"
    src.write_bytes(gzip.compress("\n".join(ids(50)).encode()))
    code, out, err = run("prepare", str(src), "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert out == ""
    assert "rows read 50" in err and "written 50" in err and "IDs/s" in err and "parts 1" in err


def test_prepare_reads_stdin(tmp_path: Path) -> None:
    data = ("\n".join(ids(30)) + "\n").encode()
    code, out, err = run("prepare", "-", "-o", str(tmp_path / "out"), "--json", input=data)
    assert code == 0, err
    assert json.loads(out)["rows_written"] == 30


def test_email_with_md5_is_a_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a@b.co\n")
    code, _, err = run(
        "prepare", str(src), "-o", str(tmp_path / "o"), "--id-type", "email", "--hash", "md5"
    )
    assert code == 2
    assert "sha256" in err


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = tmp_path / "good.csv"
    good.write_text("name,idfa\nx," + ids(1)[0] + "\n")
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    empty = tmp_path / "nothing.txt"
    empty.write_text("\n  \nnot an id\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    corrupt = tmp_path / "broken.gz"
    corrupt.write_bytes(gzip.compress(b"\n".join(i.encode() for i in ids(5000)))[:200])
    return {
        "missing file": ([str(tmp_path / "missing.txt")], "missing.txt: no such file"),
        "directory as input": ([str(tmp_path)], "is a directory"),
        "unknown column name": ([str(good), "--column", "gaid"], "good.csv: no column 'gaid'"),
        "column index past the record": ([str(good), "--column", "9"], "good.csv: --column 9"),
        "binary file": ([str(binary)], "photo.txt: not a text file"),
        "zero valid ids": ([str(empty)], "nothing.txt: no valid ID in 3 lines"),
        "corrupt gzip": ([str(corrupt)], "broken.gz: cannot read"),
        "column zero": ([str(good), "--column", "0"], "--column 0"),
        "unwritable out dir": (
            [str(good), "--column", "idfa", "-o", str(blocker / "out")],
            "a-file/out: cannot write",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "directory as input",
        "unknown column name",
        "column index past the record",
        "binary file",
        "zero valid ids",
        "corrupt gzip",
        "column zero",
        "unwritable out dir",
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(tmp_path: Path, case: str) -> None:
    args, message = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    if "-o" not in args:
        args += ["-o", str(out_dir)]
    code, out, err = run("prepare", *args)
    assert code == 2, err
    assert message in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asyncsync: error: ")
    assert "Traceback" not in err and out == ""
    assert not (out_dir / "manifest.json").exists()
    assert not list(out_dir.glob("part-*")) if out_dir.exists() else True


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    src = tmp_path / "secret.txt"
    src.write_text(ids(1)[0])
    src.chmod(0)
    code, _, err = run("prepare", str(src), "-o", str(tmp_path / "o"))
    assert code == 2 and "secret.txt: cannot read" in err


def test_module_entry_point_runs_prepare_as_a_subprocess(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(ids(20)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncsync",
            "prepare",
            str(src),
            "-o",
            str(tmp_path / "o"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows_written"] == 20


@pytest.mark.parametrize(("given", "threads"), [(None, 1), ("2", min(2, os.cpu_count() or 1))])
def test_the_command_line_loads_numpy_without_blas_threads_unless_asked(
    given: str | None, threads: int
) -> None:
    """OpenBLAS threads spin on start-up, on cores the workers need; the command line keeps
    numpy to its one thread unless the user's environment says otherwise."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    }
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    code = (
        "import os, asyncsync.cli, numpy\n"
        "numpy.ones((64, 64)) @ numpy.ones((64, 64))\n"  # a BLAS call: its threads exist now
        "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [given or "1", str(threads)]
