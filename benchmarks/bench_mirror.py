"""Benchmark: a mirror sync (APPEND + REMOVE of the diff) against a full REPLACE, 1 % daily churn.

    .venv/bin/python benchmarks/bench_mirror.py --rows 10000000

Writes two exports of mobile IDs into ``benchmarks/work/mirror-ROWS/``: day 0 holds ROWS IDs;
day 1 drops ``churn * ROWS`` of them and adds as many new ones (``--churn 0.01``: 1 % of the
IDs replaced, so the diff is 2 % of the audience). A sandbox runs in its own process
(``python -m asyncsync sandbox``), then, each against it:

1. day 0: ``sync_audience(day0, name=..., action="mirror")``: creates the audience (full upload);
2. a day later: ``sync_audience(day1, name=..., action="mirror")``: uploads and sends the diff;
3. a day later: ``sync_audience(day1, audience_id=..., action="replace")``: the same export as a
   full REPLACE, the baseline.

Prints, for steps 2 and 3, bytes uploaded, API calls and wall time (prepare included in both),
the savings, the time of the diff stage alone, the peak RSS of this process (the sync job and
the diff; the hashing workers are separate processes), and checks that the audience held the
same members (count and SHA-256 of the sorted digests) after the mirror as after the REPLACE.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from asyncsync import SyncResult, TikTokClient, sync_audience
from asyncsync.events import Event, StageChanged

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
TOKEN = "bench-mirror-token"
ADVERTISER = "7000000000000000001"
DAY = 86_400.0
BLOCK = 1 << 20


def maid_lines(ids: np.ndarray) -> bytes:
    """16-byte IDs as lowercase 8-4-4-4-12 lines."""
    n = len(ids)
    hexed = np.frombuffer(binascii.hexlify(ids.tobytes()), dtype=np.uint8).reshape(n, 32)
    out = np.full((n, 37), ord("-"), dtype=np.uint8)
    out[:, 0:8], out[:, 9:13], out[:, 14:18] = hexed[:, 0:8], hexed[:, 8:12], hexed[:, 12:16]
    out[:, 19:23], out[:, 24:36] = hexed[:, 16:20], hexed[:, 20:32]
    out[:, 36] = 10
    return out.tobytes()


def id_blocks(seed: int, rows: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for first in range(0, rows, BLOCK):
        n = min(BLOCK, rows - first)
        yield rng.integers(0, 256, size=(n, 16), dtype=np.uint8)


def write_exports(root: Path, rows: int, churn: float) -> tuple[Path, Path, int]:
    """day0: ROWS IDs; day1: the first ``changed`` dropped, ``changed`` new ones appended."""
    changed = int(rows * churn)
    day0, day1 = root / "day0.txt", root / "day1.txt"
    if day0.exists() and day1.exists():
        return day0, day1, changed
    root.mkdir(parents=True, exist_ok=True)
    with open(day0, "wb") as f0, open(day1, "wb") as f1:
        skipped = 0
        for block in id_blocks(1, rows):
            f0.write(maid_lines(block))
            drop = min(len(block), changed - skipped)
            skipped += drop
            f1.write(maid_lines(block[drop:]))
        for block in id_blocks(2, changed):
            f1.write(maid_lines(block))
    return day0, day1, changed


class Sandbox:
    def __init__(self, log: Path) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "asyncsync", "sandbox", "--port", "0", "--json",
                "--token", TOKEN, "--operation-seconds", "0.05",
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.api_base = json.loads(self.proc.stdout.readline())["api_base"]
        self.offset = 0.0

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.api_base}/_sandbox/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=600) as answer:
            return json.load(answer)

    def advance(self, seconds: float) -> None:
        self.control("clock", {"advance_seconds": seconds})
        self.offset += seconds

    def now(self) -> float:
        return time.time() + self.offset

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


class StageTimer:
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, StageChanged):
            if event.started:
                self.started[event.stage] = time.perf_counter()
            elif event.stage in self.started:
                self.took[event.stage] = time.perf_counter() - self.started[event.stage]


async def run(args: argparse.Namespace) -> None:
    root = WORK / f"mirror-{args.rows}"
    t0 = time.perf_counter()
    day0, day1, changed = write_exports(root, args.rows, args.churn)
    print(
        f"exports: {args.rows:,} IDs, {changed:,} out and {changed:,} in on day 1 "
        f"({day0.stat().st_size / 1e6:,.0f} MB each; {time.perf_counter() - t0:.1f} s)"
    )
    state = root / "state"
    shutil.rmtree(state, ignore_errors=True)
    sandbox = Sandbox(root / "sandbox.log")
    try:
        async with TikTokClient(
            TOKEN, api_base=sandbox.api_base, requests_per_second=None
        ) as client:
            common: dict[str, Any] = {
                "advertiser_id": ADVERTISER,
                "state_dir": state,
                "clock": sandbox.now,
                "poll_interval": 0.05,
                "workers": args.workers,
            }

            async def timed(export: Path, **kw: Any) -> tuple[SyncResult, float, StageTimer]:
                timer = StageTimer()
                start = time.perf_counter()
                result = await sync_audience(client, export, reporter=timer, **common, **kw)
                return result, time.perf_counter() - start, timer

            created, t_create, _ = await timed(day0, name="bench mirror", action="mirror")
            aid = created.audience_id
            assert aid is not None and created.mirror is not None
            print(
                f"day 0 mirror (create): {created.bytes_uploaded / 1e6:,.1f} MB in {t_create:.1f} s"
            )
            sandbox.advance(DAY)
            mirrored, t_mirror, timer = await timed(day1, name="bench mirror", action="mirror")
            assert mirrored.mirror is not None and mirrored.audience_id == aid
            sandbox.advance(60)
            after_mirror = sandbox.control(f"audiences/{aid}/members")
            sandbox.advance(DAY)
            replaced, t_replace, _ = await timed(day1, audience_id=aid, action="replace")
            sandbox.advance(60)
            after_replace = sandbox.control(f"audiences/{aid}/members")
    finally:
        sandbox.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    m = mirrored.mirror
    assert m is not None
    print(
        f"day 1 mirror: mode {m.mode} ({m.reason}); added {m.added:,}, "
        f"removed {m.removed:,}, unchanged {m.unchanged:,}"
    )
    rows = [
        ("mirror (APPEND+REMOVE)", mirrored, t_mirror),
        ("REPLACE (baseline)", replaced, t_replace),
    ]
    print(f"{'':24}{'uploaded MB':>14}{'api calls':>11}{'wall s':>9}")
    for label, result, took in rows:
        print(f"{label:24}{result.bytes_uploaded / 1e6:>14,.1f}{result.api_calls:>11}{took:>9.1f}")
    saved = replaced.bytes_uploaded - mirrored.bytes_uploaded
    print(
        f"bytes saved: {saved / 1e6:,.1f} MB ({saved / replaced.bytes_uploaded:.1%} of the "
        f"REPLACE); time saved: {t_replace - t_mirror:.1f} s "
        f"({(t_replace - t_mirror) / t_replace:.1%}) over loopback"
    )
    link = args.uplink_mbit * 1e6 / 8
    print(
        f"(arithmetic, not measured: at {args.uplink_mbit:g} Mbit/s upstream the saved bytes "
        f"take {saved / link:,.1f} s to send)"
    )
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in timer.took.items())
    print(f"stages of the mirror run: {stages}")
    print(f"peak RSS of this process (sync job + diff): {peak / 1e6:,.0f} MB")
    same = (after_mirror["count"], after_mirror["sha256"]) == (
        after_replace["count"], after_replace["sha256"],
    )  # fmt: skip
    print(f"audience after mirror == after REPLACE: {same} ({after_mirror['count']:,} members)")
    if not same:
        raise SystemExit(1)
    if not args.keep:
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--churn", type=float, default=0.01, help="share of IDs replaced a day")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--uplink-mbit", type=float, default=100.0, help="upstream rate for the estimate line"
    )
    parser.add_argument("--keep", action="store_true", help="keep the state dir (snapshots)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
