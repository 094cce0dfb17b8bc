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
``run.py``'s ``measure``). ``asyncsync prepare`` runs ``--repeats`` times (median; the input is
read from the page cache after the first round), the naive script once (it takes minutes). The
floors of the native hot loop are checked and printed: mobile IDs at least 4 M rows/s, every
kind at least 5x the naive script. ``--skip-naive`` runs asyncsync only. Results go to
``results/prepare-ROWS.json``.

Before the runs it prints how fast this machine writes fresh pages to the page cache (a
512 MiB scratch file): on a virtual machine whose memory the host backs lazily, pages touched
for the first time cost a hypervisor fault each (seen here: about 400 MB/s instead of
5 GB/s), which slows every contender that writes files or grows its heap, until the guest has
touched its memory once. A long-running server is past that point; a freshly booted one is not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from contenders.naive import hash_lines
from run import measure as measure_tree

from asyncsync.rules.engine import describe_engine

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
WORK = HERE / "work"
RESULTS = HERE / "results"
FLOOR_MAID_ROWS_PER_S = 4_000_000
FLOOR_NAIVE_RATIO = 5.0


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
    parser.add_argument("--repeats", type=int, default=3, help="asyncsync prepare runs (median)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--naive-only", nargs=3, metavar=("SRC", "OUT", "KIND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.naive_only:
        print(json.dumps(naive(*args.naive_only)))
        return
    DATA.mkdir(exist_ok=True)
    WORK.mkdir(exist_ok=True)
    cache_mb_s = page_cache_write_mb_s()
    print(
        f"engine: {describe_engine()}; load average {os.getloadavg()}; "
        f"page cache write {cache_mb_s:,.0f} MB/s",
        flush=True,
    )
    report: dict[str, Any] = {
        "rows": args.rows,
        "engine": describe_engine(),
        "page_cache_write_mb_s": round(cache_mb_s),
        "cpu_count": os.cpu_count(),
        "kinds": {},
    }
    failed = False
    for kind in args.kind.split(","):
        result = one_kind(kind, args)
        report["kinds"][kind] = result
        failed |= any(v == "FAIL" for v in result.get("verdicts", {}).values())
    report["load_after"] = os.getloadavg()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"prepare-{args.rows}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    if failed:
        sys.exit(1)


def page_cache_write_mb_s(size: int = 512 << 20) -> float:
    """MB/s at which a scratch file of ``size`` bytes is written to the page cache (no fsync)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "page-cache-probe.bin"
    block = b"\x5a" * (1 << 20)
    started = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    elapsed = time.perf_counter() - started
    path.unlink()
    return size / elapsed / 1e6


def one_kind(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    src = DATA / f"{kind}-{args.rows}.txt"
    if not src.exists():
        print(f"generating {src} ...", flush=True)
        tmp = src.with_suffix(".tmp")
        cmd = [sys.executable, "-m", "asyncsync", "sample", "-n", str(args.rows), "--kind", kind]
        subprocess.run([*cmd, "-o", str(tmp)], check=True)
        tmp.rename(src)
    print(f"input: {src} ({src.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)", flush=True)

    out_dir = WORK / "prepare-out"
    cmd = [sys.executable, "-m", "asyncsync", "prepare", str(src), "-o", str(out_dir), "--json"]
    cmd += ["--id-type", kind]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    runs = []
    for _ in range(max(1, args.repeats)):
        shutil.rmtree(out_dir, ignore_errors=True)
        load = os.getloadavg()[0]
        wall, rss, out, cpu = measure(cmd)
        summary = json.loads(out)
        runs.append({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss / 1e6, "load_before": load})
        print(
            f"{kind} asyncsync prepare: {wall:.2f} s  {summary['rows_read'] / wall / 1e6:.2f} M "
            f"rows/s  CPU {cpu:.2f} s  peak RSS (tree) {rss / 1e6:.0f} MB  "
            f"parts {len(summary['parts'])}  written {summary['rows_written']:,}  "
            f"(load before {load:.1f})",
            flush=True,
        )
    shutil.rmtree(out_dir, ignore_errors=True)
    t_fast = statistics.median(r["wall_s"] for r in runs)
    fast_rate = summary["rows_read"] / t_fast
    result: dict[str, Any] = {
        "rows_read": summary["rows_read"],
        "rows_written": summary["rows_written"],
        "prepare_runs": runs,
        "prepare_wall_s": t_fast,
        "prepare_cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "prepare_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "prepare_rows_per_s": fast_rate,
        "verdicts": {},
    }
    print(
        f"{kind} asyncsync prepare, median of {len(runs)}: {t_fast:.2f} s  "
        f"{fast_rate / 1e6:.2f} M rows/s",
        flush=True,
    )
    if kind == "maid":
        verdict = "pass" if fast_rate >= FLOOR_MAID_ROWS_PER_S else "FAIL"
        result["verdicts"]["rows_per_s_floor_4M"] = verdict
        print(f"{kind} floor: >= {FLOOR_MAID_ROWS_PER_S / 1e6:.0f} M rows/s: {verdict}")
    if args.skip_naive:
        return result
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
    naive_out.unlink(missing_ok=True)
    if base["rows_written"] != summary["rows_written"]:
        sys.exit(f"{kind}: the two disagree on the number of unique IDs")
    ratio = fast_rate / naive_rate
    verdict = "pass" if ratio >= FLOOR_NAIVE_RATIO else "FAIL"
    result.update(
        naive_wall_s=t_naive,
        naive_cpu_s=cpu_naive,
        naive_peak_rss_mb=rss_naive / 1e6,
        naive_load_before=load,
        ratio=ratio,
    )
    result["verdicts"]["naive_ratio_floor_5x"] = verdict
    print(
        f"{kind} ratio: {ratio:.2f}x the naive script (floor {FLOOR_NAIVE_RATIO:.0f}x): {verdict}",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()
