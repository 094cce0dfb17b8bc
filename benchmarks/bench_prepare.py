"""Benchmark: `asyncsync prepare` against a naive single-process script, same input, same run.

    .venv/bin/python benchmarks/bench_prepare.py --rows 10000000 --kind maid,email,phone

For each ``--kind``, generates ``benchmarks/data/KIND-ROWS.txt`` with ``asyncsync sample``
(kept for later runs), then times, each in its own process:

* naive: the hashing loop of ``contenders/naive.py`` with the same rules as asyncsync (one
  Python loop over the lines: strip, lowercase, the kind's checks, ``hashlib.sha256(...)
  .hexdigest()``, a Python ``set`` for dedupe, one output file), then the output's MD5 (read
  back, as a script that has to report it would).
* asyncsync: ``asyncsync prepare FILE -o DIR --id-type KIND --json`` (parts of 50 MB, MD5 while
  writing), on the active engine (``ASYNCSYNC_ENGINE=python`` for the reference engine).

Prints rows/s of both, the ratio, and the peak RSS of each process tree (the sum over the
process and all its descendants, pool workers included, sampled every 50 ms with psutil by
``run.py``'s ``measure``).
``--skip-naive`` runs asyncsync only (for the 100 M memory check).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from contenders.naive import hash_lines
from run import measure as measure_tree

from asyncsync.rules.engine import describe_engine

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
WORK = HERE / "work"


def naive(src: str, out: str, kind: str) -> dict[str, object]:
    """The straightforward script a careful engineer writes first, up to its output's MD5."""
    rows, written = hash_lines(Path(src), Path(out), kind)
    md5 = hashlib.md5()
    with open(out, "rb") as f:
        while block := f.read(1 << 20):
            md5.update(block)
    return {"rows_read": rows, "rows_written": written, "md5": md5.hexdigest()}


def measure(cmd: list[str]) -> tuple[float, int, str, float]:
    """Wall time, peak RSS of the process tree, stdout, CPU s of the tree (as ``run.py``)."""
    WORK.mkdir(parents=True, exist_ok=True)
    m = measure_tree(cmd, dict(os.environ), WORK)
    if m.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({m.returncode}): {m.stderr[-2000:]}")
    return m.wall_s, m.peak_rss, m.stdout, m.cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--kind", default="maid", help="comma-separated: maid,email,phone")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--naive-only", nargs=3, metavar=("SRC", "OUT", "KIND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.naive_only:
        print(json.dumps(naive(*args.naive_only)))
        return
    DATA.mkdir(exist_ok=True)
    WORK.mkdir(exist_ok=True)
    print(f"engine: {describe_engine()}; load average {os.getloadavg()}", flush=True)
    for kind in args.kind.split(","):
        one_kind(kind, args)


def one_kind(kind: str, args: argparse.Namespace) -> None:
    src = DATA / f"{kind}-{args.rows}.txt"
    if not src.exists():
        print(f"generating {src} ...", flush=True)
        tmp = src.with_suffix(".tmp")
        cmd = [sys.executable, "-m", "asyncsync", "sample", "-n", str(args.rows), "--kind", kind]
        subprocess.run([*cmd, "-o", str(tmp)], check=True)
        tmp.rename(src)
    print(f"input: {src} ({src.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)", flush=True)

    out_dir = WORK / "prepare-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "asyncsync", "prepare", str(src), "-o", str(out_dir), "--json"]
    cmd += ["--id-type", kind]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    load = os.getloadavg()[0]
    t_fast, rss_fast, out, cpu_fast = measure(cmd)
    summary = json.loads(out)
    fast_rate = summary["rows_read"] / t_fast
    print(
        f"{kind} asyncsync prepare: {t_fast:.2f} s  {fast_rate / 1e6:.2f} M rows/s  "
        f"CPU {cpu_fast:.2f} s  "
        f"peak RSS (tree) {rss_fast / 1e6:.0f} MB  parts {len(summary['parts'])}  "
        f"written {summary['rows_written']:,}  (load before {load:.1f})",
        flush=True,
    )
    if args.skip_naive:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    naive_out = WORK / "naive-out.txt"
    load = os.getloadavg()[0]
    t_naive, rss_naive, out, cpu_naive = measure(
        [sys.executable, __file__, "--naive-only", str(src), str(naive_out), kind]
    )
    base = json.loads(out)
    naive_rate = base["rows_read"] / t_naive
    print(
        f"{kind} naive script:      {t_naive:.2f} s  {naive_rate / 1e6:.2f} M rows/s  "
        f"CPU {cpu_naive:.2f} s  "
        f"peak RSS {rss_naive / 1e6:.0f} MB  written {base['rows_written']:,}  "
        f"(load before {load:.1f})",
        flush=True,
    )
    if base["rows_written"] != summary["rows_written"]:
        sys.exit(f"{kind}: the two disagree on the number of unique IDs")
    print(f"{kind} ratio: {fast_rate / naive_rate:.2f}x the naive script", flush=True)
    naive_out.unlink(missing_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
