"""Benchmark: `asyncsync prepare` against a naive single-process script, same input, same run.

    .venv/bin/python benchmarks/bench_prepare.py --rows 10000000

Generates ``benchmarks/data/maid-ROWS.txt`` with ``asyncsync sample`` (kept for later runs),
then times, each in its own process:

* naive: the hashing loop of ``contenders/naive.py`` (one Python loop over the lines: strip,
  lowercase, a regex for the UUID shape, the all-zero check, ``hashlib.sha256(...).hexdigest()``,
  a Python ``set`` for dedupe, one output file), then the output's MD5 (read back, as a script
  that has to report it would).
* asyncsync: ``asyncsync prepare FILE -o DIR --json`` (parts of 50 MB, MD5 while writing).

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

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
WORK = HERE / "work"


def naive(src: str, out: str) -> dict[str, object]:
    """The straightforward script a careful engineer writes first, up to its output's MD5."""
    rows, written = hash_lines(Path(src), Path(out))
    md5 = hashlib.md5()
    with open(out, "rb") as f:
        while block := f.read(1 << 20):
            md5.update(block)
    return {"rows_read": rows, "rows_written": written, "md5": md5.hexdigest()}


def measure(cmd: list[str]) -> tuple[float, int, str]:
    """Wall time, peak RSS of the process tree, stdout (measured as ``run.py`` measures)."""
    WORK.mkdir(parents=True, exist_ok=True)
    m = measure_tree(cmd, dict(os.environ), WORK)
    if m.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({m.returncode}): {m.stderr[-2000:]}")
    return m.wall_s, m.peak_rss, m.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--naive-only", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_only:
        print(json.dumps(naive(*args.naive_only)))
        return
    DATA.mkdir(exist_ok=True)
    WORK.mkdir(exist_ok=True)
    src = DATA / f"maid-{args.rows}.txt"
    if not src.exists():
        print(f"generating {src} ...", flush=True)
        tmp = src.with_suffix(".tmp")
        subprocess.run(
            [sys.executable, "-m", "asyncsync", "sample", "-n", str(args.rows), "-o", str(tmp)],
            check=True,
        )
        tmp.rename(src)
    print(f"input: {src} ({src.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)", flush=True)

    out_dir = WORK / "prepare-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "asyncsync", "prepare", str(src), "-o", str(out_dir), "--json"]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    t_fast, rss_fast, out = measure(cmd)
    summary = json.loads(out)
    fast_rate = summary["rows_read"] / t_fast
    print(
        f"asyncsync prepare: {t_fast:.2f} s  {fast_rate / 1e6:.2f} M rows/s  "
        f"peak RSS (tree) {rss_fast / 1e6:.0f} MB  parts {len(summary['parts'])}  "
        f"written {summary['rows_written']:,}",
        flush=True,
    )
    if args.skip_naive:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    naive_out = WORK / "naive-out.txt"
    t_naive, rss_naive, out = measure(
        [sys.executable, __file__, "--naive-only", str(src), str(naive_out)]
    )
    base = json.loads(out)
    naive_rate = base["rows_read"] / t_naive
    print(
        f"naive script:      {t_naive:.2f} s  {naive_rate / 1e6:.2f} M rows/s  "
        f"peak RSS {rss_naive / 1e6:.0f} MB  written {base['rows_written']:,}",
        flush=True,
    )
    if base["rows_written"] != summary["rows_written"]:
        sys.exit("the two disagree on the number of unique IDs")
    print(f"ratio: {fast_rate / naive_rate:.2f}x the naive script")
    naive_out.unlink(missing_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
