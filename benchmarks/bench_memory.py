"""Peak memory of `asyncsync prepare` on inputs built to inflate it: a zstd bomb and long lines.

    .venv/bin/python benchmarks/bench_memory.py            # bomb 4 GiB, lines 200 MB and 1 GB
    .venv/bin/python benchmarks/bench_memory.py --quick    # bomb 1 GiB, line 200 MB

Builds each input in ``--work-dir`` (default ``benchmarks/work/memory``; removed afterwards
unless ``--keep``), runs ``asyncsync prepare INPUT -o DIR --workers 2`` in its own process and
reports, for each case: the exit code and error line (each case must be refused with exit 2 and
the line number of the offending line), the input's size on disk and expanded, the wall time,
and two peak RSS figures:

* ``peak RSS MB (largest process)``: the largest resident set any one process of the command
  reached (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, exact, covering the pool workers);
* ``peak RSS MB (tree, sampled)``: the sum over the command and its descendants, sampled every
  50 ms with psutil (``run.py``'s ``measure``).

Every figure is checked against ``--max-rss-mb`` (default 400: the pool's usual footprint plus
the 64 MiB line limit, far from the gigabytes the inputs expand to); the script exits 1 if a case
is not refused as expected or exceeds it. ``--json PATH`` writes the results.

Cases:

* ``zstd bomb``: a small ``.zst`` whose single frame expands to ``--bomb-gib`` GiB: one valid ID
  line, then one endless line of ``x`` (the decompressor is asked for one chunk at a time, and
  the line limit stops it);
* ``long line N MB``: a plain text file of three valid ID lines, then one line of N MB, then a
  valid line (the worker reading that line stops at the limit).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zstandard
from run import measure

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
MB = 1_000_000
MAID = b"5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25\n"


def write_bomb(path: Path, gib: float) -> int:
    """One valid line, then ``gib`` GiB of ``x`` without a line end, zstd compressed."""
    total = int(gib * 1024 * MiB)
    block = b"x" * MiB
    with path.open("wb") as f, zstandard.ZstdCompressor(level=3).stream_writer(f) as z:
        z.write(MAID)
        for _ in range(total // MiB):
            z.write(block)
    return len(MAID) + total


def write_long_line(path: Path, line_bytes: int) -> int:
    """Three valid lines, one line of ``line_bytes`` digits, one valid line."""
    block = b"7" * MiB
    with path.open("wb") as f:
        f.write(MAID * 3)
        left = line_bytes
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        f.write(b"\n" + MAID)
    return path.stat().st_size


def run_case(name: str, src: Path, expanded: int, out: Path, expect_line: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "asyncsync", "prepare", str(src), "-o", str(out), "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCSYNC_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    measured = measure(cmd, env, out.parent)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    error = measured.stderr.strip().splitlines()[-1] if measured.stderr.strip() else ""
    refused = measured.returncode == 2 and f": line {expect_line}: " in error
    return {
        "case": name,
        "input_bytes": src.stat().st_size,
        "expanded_bytes": expanded,
        "exit_code": measured.returncode,
        "error": error,
        "refused_with_line_number": refused,
        "wall_s": round(wall, 2),
        # ru_maxrss is the largest of any waited-for descendant; KiB on Linux. It only grows, so
        # a case below an earlier one's figure reads as that figure (cases run largest last).
        "peak_rss_mb_largest_process": round(max(after, before) * 1024 / MB),
        "peak_rss_mb_tree_sampled": round(measured.peak_rss / MB),
    }


def markdown(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| case | on disk | expanded | exit | peak RSS MB (largest process) "
        "| peak RSS MB (tree, sampled) | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows.extend(
        f"| {r['case']} | {r['input_bytes'] / MB:,.1f} MB | {r['expanded_bytes'] / MB:,.0f} MB "
        f"| {r['exit_code']} | {r['peak_rss_mb_largest_process']} "
        f"| {r['peak_rss_mb_tree_sampled']} | {r['wall_s']} |"
        for r in results
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="bomb 1 GiB, one 200 MB line")
    parser.add_argument("--bomb-gib", type=float, default=4.0)
    parser.add_argument("--lines-mb", default="200,1000", help="long line sizes, MB")
    parser.add_argument("--max-rss-mb", type=int, default=400)
    parser.add_argument("--work-dir", type=Path, default=HERE / "work" / "memory")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.bomb_gib, args.lines_mb = 1.0, "200"
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        sizes = sorted(int(x) for x in args.lines_mb.split(",") if x)
        cases: list[tuple[str, Path, int, int]] = []
        for mb in sizes:
            src = work / f"long-line-{mb}MB.txt"
            cases.append((f"long line {mb:,} MB", src, write_long_line(src, mb * MB), 4))
        bomb = work / "bomb.txt.zst"
        cases.append((f"zstd bomb {args.bomb_gib:g} GiB", bomb, write_bomb(bomb, args.bomb_gib), 2))
        for name, src, expanded, line in cases:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            results.append(run_case(name, src, expanded, out, line))
            print(json.dumps(results[-1]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(markdown(results))
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results, "loadavg": load}, indent=2) + "\n")
    failed = [
        r["case"]
        for r in results
        if not r["refused_with_line_number"]
        or max(r["peak_rss_mb_largest_process"], r["peak_rss_mb_tree_sampled"]) > args.max_rss_mb
    ]
    if failed:
        print(f"FAIL: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"pass: every case refused with its line number, peak RSS <= {args.max_rss_mb} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
